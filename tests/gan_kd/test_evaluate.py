"""Tests for gan_kd.metrics.evaluator and .fidelity: uint8 sampling, the real set, Fréchet distance and the Evaluator.

Inception runs use a random-weight file (``random_inception_weights``) and at most a few dozen images per
input: this checks the wiring to torch-fidelity offline, not the values of real FIDs.
"""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from kd_core.stats import mean_std
from gan_kd.metrics.evaluator import Evaluator, UInt8Images, generate_uint8, real_uint8, to_uint8
from gan_kd.metrics.fidelity import (
    InceptionUnavailable,
    cached_inception_path,
    frechet_distance,
    load_inception,
    locate_inception_weights,
)
from gan_kd.models.biggan import Generator


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_generator(spectral_norm: str = "own", seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(num_classes=10, g_ch=4, spectral_norm=spectral_norm)


def cifar_split(root, train: bool) -> torch.Tensor:
    """The fixture's raw CIFAR-10 pixels, read straight from the pickles, as uint8 (N, 3, 32, 32)."""
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    data = []
    for name in names:
        with open(folder / name, "rb") as f:
            data.append(pickle.load(f, encoding="latin1")["data"])
    return torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))


# ------------------------------------------------------------------------------ to_uint8


def test_to_uint8_fixed_points():
    x = torch.tensor([-1.0, 1.0, 0.0, -2.0, 2.0])
    assert to_uint8(x).tolist() == [0, 255, 128, 0, 255]
    assert to_uint8(x).dtype == torch.uint8


def test_to_uint8_is_reference_rounding():
    x = torch.rand(10_000, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1
    expected = np.clip(np.floor((x.double().numpy() * 0.5 + 0.5) * 255 + 0.5), 0, 255)
    got = to_uint8(x).numpy().astype(np.float64)
    # the float32 computation may land on the other side of a .5 boundary for a few values only
    assert (got == expected).mean() > 0.999 and np.abs(got - expected).max() <= 1


def test_to_uint8_inverts_the_data_mapping():
    pixels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(pixels.float() / 127.5 - 1), pixels)


# ------------------------------------------------------------------------------ generate_uint8


def buffers_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


@pytest.mark.parametrize("spectral_norm", ["own", "torch"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_generate_uint8_shape_determinism_and_no_side_effects(spectral_norm, train_mode):
    generator = tiny_generator(spectral_norm)
    generator(torch.randn(4, generator.dim_z), torch.arange(4))  # one train step: SN u and BN stats non-initial
    generator.train(train_mode)
    before = buffers_of(generator)

    images = generate_uint8(generator, 7, num_classes=10, dim_z=generator.dim_z, seed=3, batch_size=4)
    assert images.shape == (7, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images, generate_uint8(generator, 7, num_classes=10, dim_z=generator.dim_z, seed=3,
                                              batch_size=4))
    assert not torch.equal(images, generate_uint8(generator, 7, num_classes=10, dim_z=generator.dim_z, seed=4,
                                                  batch_size=4))
    assert generator.training == train_mode
    assert all(m.training == train_mode for m in generator.modules())
    after = buffers_of(generator)
    assert after.keys() == before.keys()
    for name in before:  # BN running stats, num_batches_tracked, spectral-norm u (and v)
        assert torch.equal(after[name], before[name]), name


class RecordingGenerator(nn.Module):
    """Returns a constant image per label and records what it was called with (on the shared list)."""

    def __init__(self, calls: list):
        super().__init__()
        self.calls = calls

    def __deepcopy__(self, memo):  # keep sharing the list through generate_uint8's copy
        return RecordingGenerator(self.calls)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append((z.clone(), y.clone(), self.training))
        return (y.float() / 5 - 1).view(-1, 1, 1, 1).expand(-1, 3, 32, 32)


def test_generate_uint8_draws_standard_normal_z_and_uniform_labels_in_train_mode():
    calls: list = []
    generator = RecordingGenerator(calls).eval()
    images = generate_uint8(generator, 2000, num_classes=10, dim_z=16, seed=0, batch_size=500)
    assert images.shape == (2000, 3, 32, 32)
    assert [z.shape for z, _, _ in calls] == [(500, 16)] * 4
    assert all(train for _, _, train in calls)  # the reference samples with batch statistics
    z = torch.cat([z for z, _, _ in calls])
    labels = torch.cat([y for _, y, _ in calls])
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    counts = torch.bincount(labels, minlength=10)
    assert labels.min() >= 0 and labels.max() <= 9 and counts.min() > 150  # every class, roughly uniform
    assert torch.equal(images[:, 0, 0, 0], to_uint8(labels.float() / 5 - 1))  # images follow their labels


def test_generate_uint8_rejects_no_samples():
    with pytest.raises(ValueError):
        generate_uint8(tiny_generator(), 0, num_classes=10, dim_z=128)


# ------------------------------------------------------------------------------ frechet_distance


def direct_frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1^1/2 S2 S1^1/2), via symmetric eigendecompositions."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_frechet_distance_matches_direct_computation():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(300, 6))
    f2 = rng.normal(size=(250, 6)) @ rng.normal(size=(6, 6)) * 0.7 + rng.normal(size=6)
    expected = direct_frechet(f1, f2)
    assert expected > 1
    assert frechet_distance(f1, f2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(f2, f1) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(f1.astype(np.float32), f2.astype(np.float32)) == pytest.approx(expected, rel=1e-5)


def test_frechet_distance_of_identical_sets_is_zero():
    f = np.random.default_rng(1).normal(size=(100, 8))
    assert abs(frechet_distance(f, f)) < 1e-8


def test_frechet_distance_of_shifted_set_is_squared_shift():
    f = np.random.default_rng(2).normal(size=(100, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(f, f + shift) == pytest.approx((shift ** 2).sum(), rel=1e-8)


def test_mean_std_is_the_sample_std_everywhere():  # issue 13: one mean_std (kd_core.stats), sample std
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([5.0]) == (5.0, 0.0)


# ------------------------------------------------------------------------------ real set


def test_real_uint8_is_the_unflipped_test_split(cifar10_root):
    real = real_uint8("cifar10", cifar10_root)
    assert real.dtype == torch.uint8
    assert torch.equal(real, cifar_split(cifar10_root, train=False))  # random pixels: any flip would show


def test_real_uint8_train_split_is_unflipped_too(cifar10_root):
    assert torch.equal(real_uint8("cifar10", cifar10_root, train=True), cifar_split(cifar10_root, train=True))


def test_uint8_images_dataset_yields_bare_tensors():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    dataset = UInt8Images(images)
    assert len(dataset) == 5 and torch.is_tensor(dataset[0]) and torch.equal(dataset[3], images[3])


# ------------------------------------------------------------------------------ Evaluator: arguments


def test_evaluator_rejects_unknown_metric(tmp_path):
    with pytest.raises(ValueError) as error:
        Evaluator(dataset="cifar10", data_root=tmp_path, metrics=("fid", "lpips"))
    message = str(error.value)
    assert "lpips" in message and all(name in message for name in ("fid", "isc", "kid", "fd"))


def test_evaluator_rejects_no_metric(tmp_path):
    with pytest.raises(ValueError) as error:
        Evaluator(dataset="cifar10", data_root=tmp_path, metrics=())
    assert all(name in str(error.value) for name in ("fid", "isc", "kid", "fd"))


def test_evaluator_fd_needs_features(tmp_path):
    with pytest.raises(ValueError) as error:
        Evaluator(dataset="cifar10", data_root=tmp_path, metrics=("fd",))
    assert "ckpt:" in str(error.value)


def test_evaluator_missing_inception_file(tmp_path):
    missing = tmp_path / "inception.pth"
    with pytest.raises(ValueError) as error:
        Evaluator(dataset="cifar10", data_root=tmp_path, metrics=("fid",), inception_weights=missing)
    assert str(missing) in str(error.value)


# ------------------------------------------------------------------------------ Evaluator: FD


class ReplayGenerator(nn.Module):
    """Ignores z and labels; returns the first images of a fixed set (in [-1, 1])."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.register_buffer("images", images)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.images[: z.shape[0]]


def test_evaluator_fd_with_classifier_features(cifar10_root, classifier_ckpt, no_network, tmp_path):
    evaluator = Evaluator(dataset="cifar10", data_root=cifar10_root, metrics=("fd",), num_samples=15,
                          fd_features=f"ckpt:{classifier_ckpt}")
    assert evaluator.selection_metric() == "fd"
    assert evaluator.labels()["fd"] == "FD (resnet8x4)"  # the registry name, not the class
    real = evaluator.real.float() / 127.5 - 1
    assert real.shape[0] == 20

    real_subset = evaluator(ReplayGenerator(real[:15]), num_classes=10, dim_z=8)
    low_contrast = torch.randn(15, 3, 32, 32, generator=torch.Generator().manual_seed(0)).mul(0.2).clamp(-1, 1)
    noise = evaluator(ReplayGenerator(low_contrast), num_classes=10, dim_z=8)
    assert set(real_subset) == {"fd"} and set(noise) == {"fd"}
    assert math.isfinite(real_subset["fd"]) and math.isfinite(noise["fd"])
    assert 0 <= real_subset["fd"] < noise["fd"]
    assert abs(frechet_distance(evaluator.real_classifier, evaluator.real_classifier)) < 1e-6
    assert no_network == []


def test_evaluator_fd_on_a_generator_is_deterministic(cifar10_root, classifier_ckpt, tmp_path):
    evaluator = Evaluator(dataset="cifar10", data_root=cifar10_root, metrics=("fd",), num_samples=12,
                          fd_features=f"ckpt:{classifier_ckpt}")
    generator = tiny_generator()
    first = evaluator(generator, num_classes=10, dim_z=generator.dim_z)
    assert math.isfinite(first["fd"]) and first["fd"] > 0
    assert evaluator(generator, num_classes=10, dim_z=generator.dim_z) == first
    assert evaluator(generator, num_classes=10, dim_z=generator.dim_z, seed=1) != first


# ------------------------------------------------------------------------------ Evaluator: Inception (torch-fidelity)


@pytest.mark.slow
def test_evaluator_inception_metrics_offline(cifar10_root, random_inception_weights, no_network, tmp_path,
                                             monkeypatch):
    torch_home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))  # nothing may be downloaded to or cached in the default place
    evaluator = Evaluator(dataset="cifar10", data_root=cifar10_root, metrics=("fid", "isc", "kid"), num_samples=30,
                          inception_weights=random_inception_weights)
    assert evaluator.selection_metric() == "fid"
    generator = tiny_generator()
    generator.eval()
    before = buffers_of(generator)

    results = evaluator(generator, num_classes=10, dim_z=generator.dim_z)

    assert {"fid", "is_mean", "is_std", "kid_mean", "kid_std"} <= set(results)
    for key in ("fid", "is_mean", "is_std", "kid_mean", "kid_std"):
        assert math.isfinite(results[key]), key
    assert results["fid"] > 0
    assert results["is_mean"] > 1 + 1e-6  # the Kaiming re-init keeps the logits alive (IS is exactly 1 without)
    assert no_network == []
    assert not torch_home.exists()
    assert not (cifar10_root / "fidelity_cache").exists()  # no pickled feature cache anywhere
    assert not generator.training
    assert all(torch.equal(value, before[name]) for name, value in generator.state_dict().items())


@pytest.mark.slow
def test_inception_metrics_equal_torch_fidelity_calculate_metrics(cifar10_root, random_inception_weights, tmp_path,
                                                                  monkeypatch):
    """The metrics from the safe-loaded extractor equal torch-fidelity's own ``calculate_metrics`` on the same file."""
    import torch_fidelity

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    evaluator = Evaluator(dataset="cifar10", data_root=cifar10_root, metrics=("fid", "isc", "kid"), num_samples=20,
                          inception_weights=random_inception_weights, kid_subset_size=10)
    fake = generate_uint8(tiny_generator(), 20, num_classes=10, dim_z=128, seed=3)
    ours = evaluator._inception(fake)
    # The test wrote this file itself, so handing it to torch-fidelity's unpickler is safe here.
    reference = torch_fidelity.calculate_metrics(
        input1=UInt8Images(fake), input2=UInt8Images(evaluator.real), fid=True, isc=True, kid=True, cuda=False,
        verbose=False, cache=False, save_cpu_ram=True, kid_subset_size=10,
        feature_extractor_weights_path=str(random_inception_weights))
    assert ours["fid"] == pytest.approx(reference["frechet_inception_distance"], rel=1e-9)
    assert ours["is_mean"] == pytest.approx(reference["inception_score_mean"], rel=1e-9)
    assert ours["kid_mean"] == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------ Inception weights: where from


def test_locate_inception_weights_prefers_the_given_file_then_the_hub_cache(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    given = tmp_path / "given.pth"
    given.write_bytes(b"x")
    assert locate_inception_weights(given) == given
    cached = cached_inception_path()
    assert cached.parent.parent == tmp_path / "torch_home" / "hub"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert locate_inception_weights(None) == cached
    assert no_network == []


def test_offline_without_weights_fails_with_advice_before_loading_data(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(InceptionUnavailable) as error:  # data_root does not even exist: weights are checked first
        Evaluator(dataset="cifar10", data_root=tmp_path / "nowhere", metrics=("fid", "isc"))
    message = str(error.value)
    assert "\n" not in message and "--inception-weights" in message and "--metrics fd" in message
    assert not (tmp_path / "torch_home").exists()


def test_malicious_inception_file_is_refused_and_never_runs(tmp_path, malicious_checkpoint):
    path, marker = malicious_checkpoint
    with pytest.raises(InceptionUnavailable) as error:
        Evaluator(dataset="cifar10", data_root=tmp_path, metrics=("fid",), inception_weights=path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


def test_inception_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(InceptionUnavailable) as error:
        load_inception(path, ["2048"])
    assert str(path) in str(error.value) and "Inception-v3" in str(error.value)


# ------------------------------------------------------------------------------ Evaluator: class scores (cls)


def direct_class_scores(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """GAN-test accuracy and the IS formula exp(E_x KL(p(y|x) || p(y))), written out in numpy."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    marginal = p.mean(axis=0)
    kl = np.array([sum(pi * (math.log(pi) - math.log(m)) for pi, m in zip(row, marginal) if pi > 0) for row in p])
    return float((logits.argmax(axis=1) == labels).mean()), float(math.exp(kl.mean()))


def test_class_scores_match_the_formula_and_its_bounds():
    from gan_kd.metrics.classwise import class_scores

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(64, 10)) * 3, rng.integers(0, 10, size=64)
    scores = class_scores(torch.from_numpy(logits), torch.from_numpy(labels))
    accuracy, inception_score = direct_class_scores(logits, labels)
    assert scores["cls_acc"] == pytest.approx(accuracy, abs=1e-12)
    assert scores["cls_is"] == pytest.approx(inception_score, rel=1e-10)
    # bounds: identical predictions give IS 1; confident, balanced, correct predictions give IS = C and accuracy 1
    assert class_scores(torch.zeros(8, 10), torch.zeros(8, dtype=torch.long))["cls_is"] == pytest.approx(1.0)
    confident = torch.eye(10).repeat(3, 1) * 60
    perfect = class_scores(confident, torch.arange(10).repeat(3))
    assert perfect["cls_acc"] == 1.0 and perfect["cls_is"] == pytest.approx(10.0, rel=1e-6)
    with pytest.raises(ValueError):
        class_scores(torch.zeros(4, 10), torch.zeros(3, dtype=torch.long))


def test_generate_uint8_returns_the_labels_it_drew_and_the_same_images():
    calls: list = []
    images, labels = generate_uint8(RecordingGenerator(calls), 120, num_classes=10, dim_z=4, seed=3, batch_size=50,
                                    return_labels=True)
    assert torch.equal(labels, torch.cat([y for _, y, _ in calls]))
    assert torch.equal(images, generate_uint8(RecordingGenerator([]), 120, num_classes=10, dim_z=4, seed=3, batch_size=50))


class ClassImageGenerator(nn.Module):
    """Ignores z; returns, for label y, the fixed image ``images[y]``."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.register_buffer("images", images)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.images[y]


def classifier_logits(path, images_uint8: torch.Tensor) -> torch.Tensor:
    """The checkpoint's own logits for uint8 images at its input size (native preprocessing: its mean / std)."""
    from classifier_kd.models.checkpoint import load_classifier, read_input_spec

    network, spec = load_classifier(path).eval(), read_input_spec(path)
    mean, std = (torch.tensor(spec[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        return network((((images_uint8.float() / 127.5 - 1) + 1) / 2 - mean) / std)


def test_evaluator_cls_scores_are_the_classifiers_own_predictions(cifar10_root, classifier_ckpt, no_network):
    fd_only = Evaluator(dataset="cifar10", data_root=cifar10_root, metrics=("fd",), num_samples=40,
                        fd_features=f"ckpt:{classifier_ckpt}")
    both = Evaluator(dataset="cifar10", data_root=cifar10_root, metrics=("fd", "cls"), num_samples=40,
                     fd_features=f"ckpt:{classifier_ckpt}")
    assert both.labels() == {"fd": "FD (resnet8x4)", "cls_acc": "GAN-test accuracy (resnet8x4)",
                             "cls_is": "IS (resnet8x4)"}
    # the real test set's reference scores: the classifier's accuracy on its true labels, and its IS
    real_logits = classifier_logits(classifier_ckpt, both.real)
    real_labels = torch.from_numpy(np.array(pickle.load(open(cifar10_root / "cifar-10-batches-py" / "test_batch", "rb"),
                                                        encoding="latin1")["labels"]))
    accuracy, inception_score = direct_class_scores(real_logits.double().numpy(), real_labels.numpy())
    assert both.reference_scores["cls_acc"] == pytest.approx(accuracy, abs=1e-12)
    assert both.reference_scores["cls_is"] == pytest.approx(inception_score, rel=1e-4)

    # a generator that draws the real image i for label i: its samples' scores are the classifier's on those images
    generator = ClassImageGenerator(both.real[:10].float() / 127.5 - 1)
    results = both(generator, num_classes=10, dim_z=8)
    _, labels = generate_uint8(generator, 40, num_classes=10, dim_z=8, seed=0, return_labels=True)
    accuracy, inception_score = direct_class_scores(classifier_logits(classifier_ckpt, both.real[:10])[labels].double().numpy(),
                                                    labels.numpy())
    assert results["cls_acc"] == pytest.approx(accuracy, abs=1e-12)
    assert results["cls_is"] == pytest.approx(inception_score, rel=1e-4)
    # adding cls leaves FD bit for bit as it was (the study's committed FDs stay comparable)
    assert results["fd"] == fd_only(generator, num_classes=10, dim_z=8)["fd"]
    assert set(Evaluator(dataset="cifar10", data_root=cifar10_root, metrics=("cls",), num_samples=40,
                         fd_features=f"ckpt:{classifier_ckpt}")(generator, num_classes=10, dim_z=8)) == {"cls_acc", "cls_is"}
    assert no_network == []


def test_evaluator_cls_needs_a_classifier_and_a_label_range_it_covers(cifar10_root, classifier_ckpt, tmp_path):
    with pytest.raises(ValueError, match="cls metric needs --fd-features"):
        Evaluator(dataset="cifar10", data_root=tmp_path, metrics=("cls",))
    evaluator = Evaluator(dataset="cifar10", data_root=cifar10_root, metrics=("cls",), num_samples=20,
                          fd_features=f"ckpt:{classifier_ckpt}")
    with pytest.raises(ValueError, match="10 classes"):
        evaluator(tiny_generator_with_classes(12), num_classes=12, dim_z=128)


def tiny_generator_with_classes(num_classes: int) -> Generator:
    torch.manual_seed(0)
    return Generator(num_classes=num_classes, g_ch=4)


def test_selection_metric_is_fid_then_label_free_fd_then_fd_and_refuses_none():
    from gan_kd.metrics.evaluator import selection_metric

    assert selection_metric(("isc", "fd", "fid", "fd_vgg")) == "fid"
    assert selection_metric(("fd", "fd_vgg", "prc")) == "fd_vgg"
    assert selection_metric(("cls", "fd")) == "fd"
    with pytest.raises(ValueError, match="fid, fd_vgg, fd"):
        selection_metric(("isc", "cls"))
