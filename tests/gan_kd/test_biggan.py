"""Tests for gan_kd.models.biggan against the DiffAugment BigGAN-CIFAR facts in reference/gan.md §1."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gan_kd.models.biggan import (
    Discriminator,
    Generator,
    count_parameters,
    estimated_sigma,
    unnormalized_weight,
)

SN_MODES = ["own", "torch"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def spectral_norm_state(layer: nn.Module) -> torch.Tensor:
    """The persistent left singular vector estimate of either implementation."""
    norm = layer.parametrizations.weight[0]
    return (norm.u if hasattr(norm, "u") else norm._u).clone()


def labels(n: int, num_classes: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ parameter counts


@pytest.mark.parametrize("spectral_norm", SN_MODES)
@pytest.mark.parametrize(
    "num_classes, g_params, d_params", [(10, 4_304_387, 4_207_361), (100, 4_580_867, 4_230_401)]
)
def test_parameter_counts_match_reference(spectral_norm, num_classes, g_params, d_params):
    assert count_parameters(Generator(num_classes, spectral_norm=spectral_norm)) == g_params
    assert count_parameters(Discriminator(num_classes, spectral_norm=spectral_norm)) == d_params


def test_parameter_breakdown_cifar10():
    g, d = Generator(10), Discriminator(10)
    assert count_parameters(g.linear) == 528_384
    assert [count_parameters(b) for b in g.blocks] == [1_256_192] * 3
    assert count_parameters(g.blocks[0].conv1) == 590_080
    assert count_parameters(g.blocks[0].conv_sc) == 65_792
    assert count_parameters(g.output_bn) == 512 and count_parameters(g.output_conv) == 6_915
    assert [count_parameters(b) for b in d.blocks] == [598_272, 1_245_952, 1_180_160, 1_180_160]
    assert count_parameters(d.linear) == 257 and count_parameters(d.embed) == 2_560


# ------------------------------------------------------------------------------ shapes and seams


@pytest.mark.parametrize("spectral_norm", SN_MODES)
def test_full_size_shapes_ranges_and_feature_seam(spectral_norm):
    torch.manual_seed(0)
    g, d = Generator(spectral_norm=spectral_norm), Discriminator(spectral_norm=spectral_norm)
    y = labels(4)
    images = g(torch.randn(4, 128), y)
    assert images.shape == (4, 3, 32, 32)
    assert images.abs().max() <= 1.0 and images.std() > 0.01
    assert d.feature_dim == 256
    logits, features = d.forward_with_features(images, y)
    assert logits.shape == (4, 1) and features.shape == (4, 256)
    assert (features >= 0).all()  # ReLU then sum pooling

    d.eval()  # no power-iteration updates between the calls compared below
    with torch.no_grad():
        features = d.forward_features(images)
        logits = d(images, y)
        assert torch.allclose(d.forward_head(features, y), logits, rtol=1e-5, atol=1e-5)
        assert torch.allclose(d.forward_with_features(images, y)[0], logits, rtol=1e-5, atol=1e-5)


def test_projection_head_is_linear_plus_class_embedding_inner_product():
    d = Discriminator(d_ch=8).eval()
    h, y = torch.rand(5, 32), labels(5)
    with torch.no_grad():
        expected = d.linear(h) + (d.embed.weight[y] * h).sum(1, keepdim=True)
        assert torch.allclose(d.forward_head(h, y), expected, atol=1e-6)


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("spectral_norm", ["own", "torch", "none"])
def test_tiny_widths_and_many_classes(num_classes, spectral_norm):
    g = Generator(num_classes, g_ch=8, spectral_norm=spectral_norm)
    d = Discriminator(num_classes, d_ch=8, spectral_norm=spectral_norm)
    y = labels(3, num_classes)
    images = g(torch.randn(3, 128), y)
    assert images.shape == (3, 3, 32, 32)
    logits, features = d.forward_with_features(images, y)
    assert logits.shape == (3, 1) and features.shape == (3, d.feature_dim) and d.feature_dim == 32


def test_grey_scale_extension():
    g, d = Generator(g_ch=8, image_channels=1), Discriminator(d_ch=8, image_channels=1)
    images = g(torch.randn(2, 128), labels(2))
    assert images.shape == (2, 1, 32, 32) and d(images, labels(2)).shape == (2, 1)


@pytest.mark.parametrize("spectral_norm", SN_MODES)
def test_gradients_reach_every_parameter(spectral_norm):
    g = Generator(g_ch=8, spectral_norm=spectral_norm)
    d = Discriminator(d_ch=8, spectral_norm=spectral_norm)
    y = torch.arange(10)  # every class, so every embedding row is used
    d(g(torch.randn(10, 128), y), y).sum().backward()
    for name, p in [*g.named_parameters(), *d.named_parameters()]:
        assert p.grad is not None and p.grad.isfinite().all() and p.grad.abs().sum() > 0, name


def test_class_conditioning_changes_generator_and_discriminator_outputs():
    torch.manual_seed(1)
    g, d = Generator(g_ch=8), Discriminator(d_ch=8)
    z = torch.randn(4, 128)
    g.eval()  # running stats: outputs depend only on (z, y), not on the batch
    a, b = g(z, torch.zeros(4, dtype=torch.long)), g(z, torch.ones(4, dtype=torch.long))
    assert (a - b).abs().max() > 1e-4
    assert torch.equal(a, g(z, torch.zeros(4, dtype=torch.long)))
    d.eval()
    assert not torch.allclose(d(a, torch.zeros(4, dtype=torch.long)), d(a, torch.ones(4, dtype=torch.long)))


# ------------------------------------------------------------------------------- spectral norm


@pytest.mark.parametrize("spectral_norm", SN_MODES)
def test_power_iteration_converges_to_top_singular_value(spectral_norm):
    torch.manual_seed(2)
    d = Discriminator(d_ch=8, spectral_norm=spectral_norm)
    for layer in (d.blocks[1].conv1, d.blocks[0].conv_sc, d.linear, d.embed):
        inputs = torch.randint(0, 10, (2,)) if isinstance(layer, nn.Embedding) else None
        if inputs is None:
            shape = (2, layer.in_features) if isinstance(layer, nn.Linear) else (2, layer.in_channels, 4, 4)
            inputs = torch.randn(shape)
        layer.train()
        for _ in range(100):
            layer(inputs)
        true_sigma = torch.linalg.matrix_norm(unnormalized_weight(layer).detach().flatten(1), ord=2)
        assert torch.isclose(estimated_sigma(layer), true_sigma, rtol=0.01)
        layer.eval()  # reading .weight in eval mode does not advance the iteration
        effective = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert torch.isclose(effective, torch.tensor(1.0), rtol=0.01)


@pytest.mark.parametrize("spectral_norm", SN_MODES)
def test_u_is_updated_in_train_mode_only(spectral_norm):
    g = Generator(g_ch=8, spectral_norm=spectral_norm)
    layer = g.blocks[0].conv1
    z, y = torch.randn(2, 128), labels(2)
    before = spectral_norm_state(layer)
    g.eval()
    g(z, y)
    assert torch.equal(spectral_norm_state(layer), before)
    g.train()
    g(z, y)
    assert not torch.equal(spectral_norm_state(layer), before)


def test_spectral_norm_state_is_buffers_and_survives_copy_and_state_dict():
    g = Generator(g_ch=8)
    buffers = dict(g.named_buffers())
    assert "linear.parametrizations.weight.0.u" in buffers
    assert not any(name.endswith(".u") for name, _ in g.named_parameters())
    g(torch.randn(2, 128), labels(2))  # advance u
    ema = copy.deepcopy(g)  # how the trainer makes G_ema
    fresh = Generator(g_ch=8)
    fresh.load_state_dict(g.state_dict())
    z, y = torch.randn(3, 128), labels(3)
    for model in (g, ema, fresh):
        model.eval()
    with torch.no_grad():
        assert torch.equal(g(z, y), ema(z, y)) and torch.equal(g(z, y), fresh(z, y))


# ---------------------------------------------------------------------------------------- init


@pytest.mark.parametrize("spectral_norm", SN_MODES)
def test_n02_init_on_every_weight_and_default_biases(spectral_norm):
    torch.manual_seed(3)
    g, d = Generator(spectral_norm=spectral_norm), Discriminator(spectral_norm=spectral_norm)
    layers = [m for m in [*g.modules(), *d.modules()] if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(layers) == (1 + 3 * (3 + 4) + 1) + (2 + 1 + 3 + 2 + 2 + 1 + 1)  # incl. cBN embeddings
    for layer in layers:
        weight = unnormalized_weight(layer)
        tolerance = 5 * 0.02 / (2 * weight.numel()) ** 0.5  # 5 standard errors of a sample std
        assert abs(weight.std().item() - 0.02) < tolerance, layer
        if getattr(layer, "bias", None) is not None:
            bound = 1 / weight[0].numel() ** 0.5  # PyTorch default: U(-1/sqrt(fan_in), +)
            assert 0 < layer.bias.abs().max() <= bound, layer
    assert torch.equal(g.output_bn.weight, torch.ones(256))
    assert torch.equal(g.output_bn.bias, torch.zeros(256))


def test_default_init_keeps_pytorch_initialisation():
    torch.manual_seed(4)
    d = Discriminator(init="default")
    weight = unnormalized_weight(d.blocks[1].conv1)
    # kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), +), std 1/sqrt(3 * 2304) ~ 0.012
    assert abs(weight.std().item() - (3 * 2304) ** -0.5) < 0.001


# ------------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Generator(num_classes=0), "num_classes"),
        (lambda: Discriminator(num_classes=0), "num_classes"),
        (lambda: Generator(g_ch=0), "g_ch"),
        (lambda: Discriminator(d_ch=-1), "d_ch"),
        (lambda: Generator(dim_z=0), "dim_z"),
        (lambda: Generator(spectral_norm="sn"), "'own', 'torch', 'none'"),
        (lambda: Discriminator(spectral_norm="yes"), "'own', 'torch', 'none'"),
        (lambda: Generator(init="ortho"), "'N02', 'default'"),
        (lambda: Discriminator(init="xavier"), "'N02', 'default'"),
    ],
)
def test_bad_arguments_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_inputs_raise():
    g, d = Generator(g_ch=8), Discriminator(d_ch=8)
    with pytest.raises(ValueError, match="z must have shape"):
        g(torch.randn(2, 64), labels(2))
    with pytest.raises(ValueError, match="labels"):
        g(torch.randn(2, 128), torch.zeros(2))  # float labels
    with pytest.raises(ValueError, match="labels"):
        d(torch.randn(2, 3, 32, 32), labels(3))
