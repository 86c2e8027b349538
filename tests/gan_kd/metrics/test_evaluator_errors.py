"""gan_kd.metrics.evaluator: metric names, and the one-line errors of a configuration that cannot work.

Everything that can fail must fail in the constructor (before a training run starts), as a ``ValueError`` with
a one-line message naming the problem. The data are the tiny fake Fashion-MNIST of ``tests/conftest.py``
(60 train, 20 test images) laid out as ``<root>/FashionMNIST/raw``; a valid configuration on the same root is
the positive control.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gan_kd.metrics.evaluator import (
    METRICS,
    RESULT_KEYS,
    SUITE,
    Evaluator,
    parse_metrics,
)
from gan_kd.metrics.features import FeatureSpaceError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture
def fake_root(tmp_path: Path, fashion_mnist_raw_dir: Path) -> Path:
    """A data root holding the fake Fashion-MNIST in torchvision's layout (found before the system folder)."""
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in fashion_mnist_raw_dir.iterdir():
        (raw / path.name).write_bytes(path.read_bytes())
    return tmp_path / "root"


def one_line_error(error_type, fragments, **kwargs) -> str:
    with pytest.raises(error_type) as info:
        Evaluator(**kwargs)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and message.strip() == message and message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ---------------------------------------------------------------------------------------------- parse_metrics


def test_parse_metrics_expands_suite_in_metrics_order():
    assert parse_metrics("suite") == SUITE
    assert set(SUITE) == {m for m, (space, _) in METRICS.items() if space in ("label-free", "pixels")}
    assert not {"fid", "isc", "kid", "fd", "cls", "icfd"} & set(SUITE)  # nothing that needs a file
    assert parse_metrics("fd, suite") == tuple(m for m in METRICS if m in {"fd", *SUITE})
    assert parse_metrics("colour,fd_vgg,colour") == ("fd_vgg", "colour")


def test_parse_metrics_names_the_unknown_ones():
    with pytest.raises(ValueError) as info:
        parse_metrics("fd_vgg,fdd,Suite")
    message = str(info.value)
    assert "fdd" in message and "Suite" in message and "unknown metric" in message
    assert "fd_vgg, kid_vgg" in message  # the allowed names are listed
    assert "\n" not in message


@pytest.mark.parametrize("text", ["", " , ", ","])
def test_parse_metrics_rejects_an_empty_list(text):
    with pytest.raises(ValueError, match=r"\(none given\)"):
        parse_metrics(text)


def test_every_metric_has_result_keys():
    assert set(RESULT_KEYS) == set(METRICS)


# ---------------------------------------------------------------------------------------------- constructor errors


def test_unknown_metric(fake_root):
    message = one_line_error(ValueError, ["unknown metric(s) bogus"], dataset="fashion_mnist", data_root=fake_root,
                             metrics=("fd_vgg", "bogus"), num_samples=20)
    assert "fd_vgg" in message  # among the allowed ones


def test_no_metric(fake_root):
    one_line_error(ValueError, ["(none given)"], dataset="fashion_mnist", data_root=fake_root, metrics=(),
                   num_samples=20)


def test_memo_without_training_subset(fake_root):
    one_line_error(ValueError, ["memo", "training subset"], dataset="fashion_mnist", data_root=fake_root,
                   metrics=("memo",), num_samples=20)


@pytest.mark.parametrize("metrics, num_samples, name, minimum", [
    (("prc",), 3, "prc", 4),
    (("dc",), 5, "dc", 6),
    (("prc", "dc"), 5, "dc", 6),
    (("icfd_vgg",), 99, "icfd_vgg", 100),
    (("gan_train",), 31, "gan_train", 32),
])
def test_too_few_samples(fake_root, metrics, num_samples, name, minimum):
    one_line_error(ValueError, [f"{num_samples} evaluation samples are too few for the {name} metric",
                                f"at least {minimum}"],
                   dataset="fashion_mnist", data_root=fake_root, metrics=metrics, num_samples=num_samples)


def test_too_few_samples_for_icfd(fake_root, classifier_ckpt):
    one_line_error(ValueError, ["too few for the icfd metric", "at least 100"], dataset="fashion_mnist",
                   data_root=fake_root, metrics=("icfd",), num_samples=50, fd_features=f"ckpt:{classifier_ckpt}")


def test_a_single_sample(fake_root):
    one_line_error(ValueError, ["1 evaluation samples are too few", "at least 2"], dataset="fashion_mnist",
                   data_root=fake_root, metrics=("fd_vgg",), num_samples=1)


def test_minimum_sample_counts_are_accepted(fake_root):
    """The minimum itself passes the count check (the error above is not off by one)."""
    assert Evaluator(dataset="fashion_mnist", data_root=fake_root, metrics=("colour",), num_samples=2).num_samples == 2


@pytest.mark.parametrize("metrics, fragment", [
    (("fd",), "the fd metric needs --fd-features ckpt:PATH"),
    (("cls",), "the cls metric needs --fd-features"),
    (("fd", "cls", "icfd"), "the fd and cls and icfd metrics need --fd-features"),
])
def test_classifier_metrics_without_fd_features(fake_root, metrics, fragment):
    one_line_error(ValueError, [fragment], dataset="fashion_mnist", data_root=fake_root, metrics=metrics,
                   num_samples=200)


def test_missing_label_free_weights(fake_root, tmp_path):
    message = one_line_error(FeatureSpaceError, ["missing.pt", "does not exist"], dataset="fashion_mnist",
                             data_root=fake_root, metrics=("fd_vgg",), num_samples=20,
                             label_free=f"vgg16:{tmp_path / 'missing.pt'}")
    assert "VGG-16" in message


def test_missing_label_free_weights_relative_path(fake_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    one_line_error(FeatureSpaceError, ["missing.pt does not exist"], dataset="fashion_mnist", data_root=fake_root,
                   metrics=("fd_vgg",), num_samples=20, label_free="vgg16:missing.pt")


def test_unknown_label_free_space(fake_root):
    one_line_error(FeatureSpaceError, ["unknown label-free features 'vgg17'"], dataset="fashion_mnist",
                   data_root=fake_root, metrics=("dc",), num_samples=20, label_free="vgg17")


def test_missing_classifier_checkpoint(fake_root, tmp_path):
    one_line_error(ValueError, ["not found", "none.pt"], dataset="fashion_mnist", data_root=fake_root,
                   metrics=("fd",), num_samples=20, fd_features=f"ckpt:{tmp_path / 'none.pt'}")


def test_cls_with_a_classifier_of_fewer_classes(fake_root, tmp_path, classifier_input_spec):
    from classifier_kd.models import create_model, save_classifier

    path = tmp_path / "five.pt"
    save_classifier(path, create_model("resnet20", 5), "resnet20", 5, input_spec=classifier_input_spec)
    one_line_error(ValueError, ["5 classes", "fashion_mnist has 10"], dataset="fashion_mnist", data_root=fake_root,
                   metrics=("cls",), num_samples=20, fd_features=f"ckpt:{path}")


@pytest.mark.parametrize("indices", [np.array([0, 60]), np.array([-1, 3]), np.array([], dtype=np.int64)])
def test_training_subset_out_of_range(fake_root, indices):
    one_line_error(ValueError, ["[0, 60)"], dataset="fashion_mnist", data_root=fake_root, metrics=("memo",),
                   num_samples=20, train_indices=indices)


def test_missing_data(tmp_path, monkeypatch):
    """No data anywhere: the loaders' one-line DatasetNotFound (a FileNotFoundError), from the constructor."""
    from kd_core.runtime import datasets as kd_datasets
    from kd_core.runtime import fashion_mnist as kd_fashion_mnist

    monkeypatch.setattr(kd_fashion_mnist, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "no-such-dir")
    with pytest.raises(kd_datasets.DatasetNotFound) as info:
        Evaluator(dataset="fashion_mnist", data_root=tmp_path / "empty", metrics=("colour",), num_samples=20)
    assert "\n" not in str(info.value)


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        Evaluator(dataset="mnist", data_root=tmp_path, metrics=("colour",), num_samples=20)


# ---------------------------------------------------------------------------------------------- score errors


@pytest.fixture
def colour_evaluator(fake_root) -> Evaluator:
    return Evaluator(dataset="fashion_mnist", data_root=fake_root, metrics=("colour",), num_samples=20)


def test_score_rejects_floats(colour_evaluator):
    with pytest.raises(ValueError, match="uint8"):
        colour_evaluator.score(torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))


def test_score_rejects_mismatched_labels(colour_evaluator):
    with pytest.raises(ValueError, match="3 labels"):
        colour_evaluator.score(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- positive control


def test_suite_on_the_fake_data_reports_every_key(fake_root, classifier_ckpt):
    """Every metric that needs no Inception file (but icfd_vgg: ten 512-d FDs, ~7 s, covered by test_planted.py),
    on the fake root: the result has exactly RESULT_KEYS' keys, all finite, and labels() names each; the real
    test set repeated five times scores as itself."""
    metrics = tuple(m for m in parse_metrics("suite,fd,cls,icfd") if m != "icfd_vgg")
    evaluator = Evaluator(dataset="fashion_mnist", data_root=fake_root, metrics=metrics, num_samples=100,
                          fd_features=f"ckpt:{classifier_ckpt}", train_indices=np.arange(10), data_fraction=10 / 60)
    real, labels = evaluator.real, evaluator.real_labels
    assert real.shape == (20, 3, 32, 32) and real.dtype == torch.uint8
    images, image_labels = real.repeat(5, 1, 1, 1), labels.repeat(5)
    result = evaluator.score(images, image_labels)
    expected_keys = {key for metric in metrics for key in RESULT_KEYS[metric]}
    assert set(result) == expected_keys
    assert all(np.isfinite(value) for value in result.values())
    # labels() names every reported value; the spreads (*_std) go with their means
    assert set(evaluator.labels()) == {key for key in expected_keys if not key.endswith("_std")}
    # Five copies of the 20 real images: same mean, and the unbiased covariance scaled by c = 5 * 19 / 99, so
    # FD = tr(S) (1 + c - 2 sqrt(c)) = tr(S) (1 - sqrt(c))^2 exactly, in either space.
    c = 5 * 19 / 99
    for key, real_features in (("fd_vgg", evaluator.real_label_free), ("fd", evaluator.real_classifier)):
        trace = float(torch.cov(real_features.T).trace())
        assert result[key] == pytest.approx(trace * (1 - c ** 0.5) ** 2, rel=1e-3, abs=1e-9 * trace), key
    assert result["channel_spread"] == 0.0
    assert result["coverage"] == 1.0 and result["precision"] == 1.0 and result["recall"] == 1.0
    assert result["cls_acc"] == pytest.approx(evaluator.reference_scores["cls_acc"])
    assert result["memorised"] == pytest.approx(0.0, abs=0.2)  # unseen images (the test split) vs 10 training ones
    record = evaluator.describe()
    assert record["memorisation"]["data_fraction"] == pytest.approx(10 / 60)
    assert "10 training images; 50 unseen real images" in record["memorisation"]["sets"]
    assert record["label_free"]["name"] == "vgg16-half-random:0"
    assert evaluator.selection_metric() == "fd_vgg"
