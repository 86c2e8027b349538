import pytest
import torch

from gan_kd.models.biggan import Discriminator, Generator
from gan_kd.objectives import discriminator_hinge, generator_hinge
from gan_kd.config import TrainConfig, validate_config
from gan_kd.grids import grid_labels
from gan_kd.legacy import rename_legacy_window
from gan_kd.objectives import build_models
from gan_kd.presets import PRESETS
from gan_kd.train import ema_update


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_config(**overrides) -> TrainConfig:
    options = dict(g_ch=4, d_ch=4, teacher="ckpt:unused", normalizer="whiten", projector="orthogonal")
    options.update(overrides)
    return TrainConfig(**options)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_build_the_table_rows(preset):
    config = tiny_config(**{k: v for k, v in PRESETS[preset].items()})
    from kd_core.losses.classes import ClassEmbeddings

    generator, critic = build_models(config, num_classes=10, teacher_dim=24,
                                     class_embeddings=ClassEmbeddings(torch.randn(10, 24)))
    if preset == "da":
        assert critic.distill_loss is None
        return
    loss = critic.distill_loss
    if PRESETS[preset]["distill_loss"] != "vkd":
        assert type(loss).__name__ == {"spkd": "SPKDLoss", "pkd": "PKDLoss", "kd-dlgan": "KDDLGANLoss",
                                       "label-distillation": "LabelDistillationLoss"}[preset]
        return
    expected_projector = {"da-kd": "LinearProjector", "fitnets": "LinearProjector", "vkd": "OrthogonalProjector",
                          "vkd-whiten": "OrthogonalProjector"}[preset]
    expected_normalizer = {"da-kd": "NoNormalizer", "fitnets": "NoNormalizer", "vkd": "NoNormalizer",
                           "vkd-whiten": "Whitener"}[preset]
    assert type(loss.projector).__name__ == expected_projector
    assert type(loss.normalizer).__name__ == expected_normalizer
    assert loss.distance == "mse"


def test_d_step_gradients_reach_discriminator_and_projector():
    torch.manual_seed(0)
    _, critic = build_models(tiny_config(), num_classes=10, teacher_dim=24)
    optimiser = torch.optim.Adam(critic.parameters(), lr=1e-3)
    # the projector is optimised by D's optimiser
    optimised = {id(p) for group in optimiser.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in critic.distill_loss.parameters())
    images, labels = torch.rand(20, 3, 32, 32) * 2 - 1, torch.randint(0, 10, (20,))
    logits, distill = critic(images, labels, torch.randn(20, 24))
    (discriminator_hinge(logits[10:], logits[:10]) + distill).backward()
    for name, parameter in critic.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_projector_alone_reduces_distillation_on_fixed_features():
    torch.manual_seed(0)
    _, critic = build_models(tiny_config(normalizer="whiten"), num_classes=10, teacher_dim=24)
    images = torch.rand(40, 3, 32, 32) * 2 - 1
    teacher = torch.randn(40, 24) @ torch.randn(24, 24)
    with torch.no_grad():
        features = critic.discriminator.forward_features(images)
    features = (features - features.mean(0)) / (features.std(0) + 1e-3)  # on the teacher's scale
    loss = critic.distill_loss
    optimiser = torch.optim.Adam(loss.projector.parameters(), lr=0.05)
    first = loss(features, teacher).item()
    for _ in range(60):
        optimiser.zero_grad()
        value = loss(features, teacher)
        value.backward()
        optimiser.step()
    assert value.item() < first - 0.05


def test_generator_step_has_no_distillation_and_reaches_generator():
    torch.manual_seed(0)
    generator, critic = build_models(tiny_config(), num_classes=10, teacher_dim=24)
    critic.requires_grad_(False)
    z, labels = torch.randn(8, 128), torch.randint(0, 10, (8,))
    generator_hinge(critic.discriminator(generator(z, labels), labels)).backward()
    assert all(p.grad is not None for p in generator.parameters())
    assert all(p.grad is None for p in critic.parameters())


def test_ema_update_blends_parameters_and_buffers():
    a, b = Generator(g_ch=4), Generator(g_ch=4)
    for p in b.parameters():
        p.data.add_(1.0)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    source = b.state_dict()
    ema_update(a, b, decay=0.9)
    for name, value in a.state_dict().items():
        if value.dtype.is_floating_point:
            assert torch.allclose(value, 0.9 * before[name] + 0.1 * source[name], atol=1e-6), name
        else:
            assert torch.equal(value, source[name])
    ema_update(a, b, decay=0.0)
    assert all(torch.equal(v, source[k]) for k, v in a.state_dict().items())


def test_grid_labels_one_row_per_class():
    assert grid_labels(10, rows=3, columns=2).tolist() == [0, 0, 1, 1, 2, 2]
    assert grid_labels(2, rows=5, columns=1).tolist() == [0, 1]


@pytest.mark.parametrize("overrides,message", [
    ({"data_fraction": 0.0}, "data fraction"),
    ({"data_fraction": 1.5}, "data fraction"),
    ({"preset": "kd-clip"}, "allowed: da, da-kd, vkd, vkd-whiten"),
    ({"dataset": "mnist"}, "allowed: cifar10, cifar100, fashion_mnist"),
    ({"teacher": None}, "--teacher"),
    ({"diffaug": "color,rotate"}, "rotate"),
    ({"iterations": 0}, "iterations"),
])
def test_validate_config_names_the_bad_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate_config(tiny_config(**overrides))


def test_a_metrics_window_saved_under_the_old_names_resumes_under_the_new_ones():
    """A last.pt written before the loss terms were named per step holds d_loss, kd_loss, ...; the totals
    (sums over the window, like the terms) are rebuilt: d/total = hinge + lecam + kd_weight * kd."""
    old = {"d_loss": 3.0, "d_real": 0.5, "d_fake": -0.5, "lecam": 0.25, "kd_loss": 2.0, "g_loss": 1.5}
    assert rename_legacy_window(old, kd_weight=0.5) == {
        "d/loss_hinge": 3.0, "d/logit_real": 0.5, "d/logit_fake": -0.5, "d/loss_lecam": 0.25, "d/loss_kd": 2.0,
        "g/loss_hinge": 1.5, "d/total": 3.0 + 0.25 + 0.5 * 2.0, "g/total": 1.5}
    assert rename_legacy_window({"d_loss": 3.0}, kd_weight=1.0) == {"d/loss_hinge": 3.0, "d/total": 3.0}
    new = {"d/loss_hinge": 1.0, "d/total": 1.0, "g/loss_hinge": 2.0, "g/total": 2.0}
    assert rename_legacy_window(new, kd_weight=1.0) == new and rename_legacy_window({}, kd_weight=1.0) == {}


# ------------------------------------------------------------------------------ precision and memory format


def d_losses(critic, images, labels, teacher, precision: str, channels_last: bool):
    """(hinge, distillation) of one D forward, as the trainer computes them."""
    from kd_core.runtime.precision import resolve_precision

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    critic = critic.to(memory_format=fmt)
    with resolve_precision(precision, "cpu").autocast():
        logits, distill = critic(images.contiguous(memory_format=fmt), labels, teacher)
    logits = logits.float()
    return discriminator_hinge(logits[10:], logits[:10]), distill


def test_channels_last_and_bf16_compute_the_fp32_losses():
    """channels_last fp32: equal up to float reassociation (rtol 1e-4); bf16 autocast: within 5% (bf16 has
    8 mantissa bits); the distillation term is computed in float32 in every case."""
    import copy

    torch.manual_seed(0)
    _, critic = build_models(tiny_config(d_ch=8), num_classes=10, teacher_dim=24)
    images, labels = torch.rand(20, 3, 32, 32) * 2 - 1, torch.randint(0, 10, (20,))
    teacher = torch.randn(20, 24)
    reference = d_losses(copy.deepcopy(critic), images, labels, teacher, "fp32", False)
    last = d_losses(copy.deepcopy(critic), images, labels, teacher, "fp32", True)
    bf16 = d_losses(copy.deepcopy(critic), images, labels, teacher, "bf16", True)
    for ref, value in zip(reference, last):
        torch.testing.assert_close(value, ref, rtol=1e-4, atol=1e-5)
    for ref, value in zip(reference, bf16):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ref, rtol=5e-2, atol=5e-2)


def test_spectral_norm_power_iteration_stays_fp32_under_bf16_autocast():
    import copy

    torch.manual_seed(0)
    discriminator = Discriminator(num_classes=10, d_ch=4)
    bf16 = copy.deepcopy(discriminator)
    images, labels = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    discriminator(images, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16(images, labels)
    fp32_state, bf16_state = discriminator.state_dict(), bf16.state_dict()
    spectral = [name for name in fp32_state if name.endswith(".u") or name.endswith(".sigma")]
    assert spectral
    for name in spectral:  # the same fp32 iteration, from the same weights: bitwise equal
        assert bf16_state[name].dtype == torch.float32 and torch.equal(bf16_state[name], fp32_state[name]), name


def test_diff_augment_keeps_the_memory_format():
    """The same draws on both layouts: translation/cutout move pixels exactly; color's means reassociate."""
    from gan_kd.diffaug import diff_augment

    x = torch.rand(6, 3, 32, 32)
    for policy, atol in (("translation,cutout", 0.0), ("color,translation,cutout", 1e-6)):
        torch.manual_seed(1)
        plain = diff_augment(x, policy)
        torch.manual_seed(1)
        last = diff_augment(x.contiguous(memory_format=torch.channels_last), policy)
        assert plain.is_contiguous() and last.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(last, plain, rtol=0, atol=atol)


def test_overfit_probe_reads_d_on_train_and_heldout_reals_without_changing_d(cifar10_root):
    import numpy as np

    from gan_kd.data import load_dataset
    from gan_kd.probes import OverfitProbe

    indices = np.arange(100)[::-1].copy()
    probe = OverfitProbe("cifar10", str(cifar10_root), indices, 12)
    train = load_dataset("cifar10", cifar10_root, train=True, hflip=False)
    heldout = load_dataset("cifar10", cifar10_root, train=False, hflip=False)
    images, labels = probe.sets["train"]
    assert images.shape[0] == 12 and torch.equal(images[0], train[99][0]) and int(labels[1]) == train[98][1]
    assert torch.equal(probe.sets["heldout"][0][3], heldout[3][0])

    torch.manual_seed(0)
    discriminator = Discriminator(num_classes=10, d_ch=4)
    discriminator(torch.randn(4, 3, 32, 32), torch.arange(4))  # move the power-iteration vectors off their init
    state = {k: v.clone() for k, v in discriminator.state_dict().items()}
    rng = torch.get_rng_state()
    result = probe(discriminator, torch.device("cpu"), batch_size=5)
    assert discriminator.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in discriminator.state_dict().items())

    discriminator.eval()
    with torch.no_grad():
        d_train = discriminator(*probe.sets["train"]).flatten()
        d_heldout = discriminator(*probe.sets["heldout"]).flatten()
    assert result["probe/d_train"] == pytest.approx(d_train.mean().item(), rel=1e-5)
    assert result["probe/d_heldout"] == pytest.approx(d_heldout.mean().item(), rel=1e-5)
    assert result["probe/d_gap"] == pytest.approx((d_train.mean() - d_heldout.mean()).item(), rel=1e-4, abs=1e-6)
    assert result["probe/rt"] == pytest.approx(d_train.sign().mean().item())
