"""BigGAN generator and projection discriminator for 32x32 images.

The architecture is the one the DiffAugment BigGAN-CIFAR config trains (reference/gan.md §1):
G_ch = D_ch = 64, dim_z = 128, no attention, no shared class embedding, no hierarchical z,
N(0, 0.02) init and spectral norm on every conv/linear of G and D and on D's class embedding.
With the defaults the parameter counts equal the reference's exactly
(CIFAR-10: G 4,304,387, D 4,207,361; CIFAR-100: G 4,580,867, D 4,230,401).

The discriminator is split at the seam feature distillation uses: ``forward_features`` returns the
globally sum-pooled 256-d feature ``h`` that feeds the logit, ``forward_head`` maps it to the logit.

Spectral norm is a ``torch.nn.utils.parametrize`` parametrization in both modes, so a layer's
``.weight`` is always the normalised weight and ``unnormalized_weight(layer)`` the trained one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

SPECTRAL_NORM_MODES = ("own", "torch", "none")
INIT_SCHEMES = ("N02", "default")

# DiffAugment BigGAN-CIFAR config: SN_eps 1e-8, BN_eps 1e-5, BN momentum 0.1, N02 init std.
SN_EPS = 1e-8
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
N02_STD = 0.02


# --------------------------------------------------------------------------------------------------
# Spectral norm and initialisation
# --------------------------------------------------------------------------------------------------


class SpectralNorm(nn.Module):
    """Parametrization ``weight -> weight / sigma`` with sigma from one power iteration per call.

    Follows the BigGAN-style spectral norm of the DiffAugment BigGAN-CIFAR config: the weight is
    viewed as a matrix (out, rest); a persistent left singular vector estimate ``u`` is refined by one
    power iteration per forward and written back only in train mode; sigma = u^T W v with u, v treated
    as constants, so gradients flow through W alone. In eval mode the same iteration runs from the
    stored ``u`` without changing it. ``sigma`` keeps the last train-mode estimate (for logging).
    """

    def __init__(self, weight: Tensor, eps: float = SN_EPS) -> None:
        super().__init__()
        self.eps = eps
        u = torch.randn(1, weight.shape[0], device=weight.device, dtype=weight.dtype)
        self.register_buffer("u", F.normalize(u, dim=1, eps=eps))
        self.register_buffer("sigma", torch.ones((), device=weight.device, dtype=weight.dtype))

    def forward(self, weight: Tensor) -> Tensor:
        with torch.autocast(device_type=weight.device.type, enabled=False):  # the power iteration stays in fp32
            return self._normalise(weight)

    def _normalise(self, weight: Tensor) -> Tensor:
        matrix = weight.flatten(1)
        with torch.no_grad():
            v = F.normalize(self.u @ matrix, dim=1, eps=self.eps)
            u = F.normalize(v @ matrix.t(), dim=1, eps=self.eps)
            if self.training:
                self.u.copy_(u)
        sigma = (u @ matrix @ v.t()).squeeze()
        if self.training:
            self.sigma.copy_(sigma.detach())
        return weight / sigma


def apply_spectral_norm(layer: nn.Module, mode: str) -> nn.Module:
    """Wrap ``layer.weight`` with spectral norm: ``"own"`` (:class:`SpectralNorm`), ``"torch"``
    (``torch.nn.utils.parametrizations.spectral_norm``, 1 power iteration, eps 1e-8) or ``"none"``.

    Either way the trainable tensor is ``layer.parametrizations.weight.original`` and the power
    iteration state lives in buffers, so parameter counts do not change.
    """
    _check_choice("spectral_norm", mode, SPECTRAL_NORM_MODES)
    if mode == "own":
        parametrize.register_parametrization(layer, "weight", SpectralNorm(layer.weight))
    elif mode == "torch":
        nn.utils.parametrizations.spectral_norm(layer, n_power_iterations=1, eps=SN_EPS)
    return layer


def unnormalized_weight(layer: nn.Module) -> Tensor:
    """The trainable weight of ``layer``, before spectral normalisation (if any)."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def estimated_sigma(layer: nn.Module) -> Tensor:
    """The spectral norm's current estimate of the top singular value of ``layer``'s weight.

    Reads the power-iteration state without advancing it. For ``"own"`` this is the estimate of
    the last train-mode forward; for ``"torch"`` it is u^T W v from torch's stored ``_u``, ``_v``.
    """
    if not parametrize.is_parametrized(layer, "weight"):
        raise ValueError(f"{type(layer).__name__} has no spectral norm on its weight")
    norm = layer.parametrizations.weight[0]
    if isinstance(norm, SpectralNorm):
        return norm.sigma.clone()
    with torch.no_grad():  # torch's _SpectralNorm with dim=0: the matrix is weight.flatten(1)
        matrix = layer.parametrizations.weight.original.flatten(1)
        return torch.dot(norm._u, matrix @ norm._v)


def init_weight_(layer: nn.Module, init: str) -> None:
    """``"N02"``: weight ~ N(0, 0.02), bias left at PyTorch's default; ``"default"``: untouched."""
    _check_choice("init", init, INIT_SCHEMES)
    if init == "N02":
        nn.init.normal_(layer.weight, mean=0.0, std=N02_STD)


def _make_layer(layer: nn.Module, spectral_norm: str, init: str) -> nn.Module:
    """Initialise then (optionally) spectrally normalise, so torch's power-iteration warm-up
    sees the final initial weight."""
    init_weight_(layer, init)
    return apply_spectral_norm(layer, spectral_norm)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable-tensor elements (spectral-norm ``u``/``v`` are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")


def _check_labels(y: Tensor, batch_size: int, num_classes: int) -> None:
    if y.shape != (batch_size,) or y.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"labels must be an integer tensor of shape ({batch_size},); "
            f"got dtype {y.dtype} shape {tuple(y.shape)}"
        )
    # No range check against num_classes here: it would force a device sync every step;
    # nn.Embedding reports out-of-range labels itself.


# --------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------


class ConditionalBatchNorm2d(nn.Module):
    """Parameter-free batch norm, then per-class scale ``1 + gain[y]`` and shift ``bias[y]``.

    As in the DiffAugment BigGAN-CIFAR config (G_shared off): gain and bias are plain
    ``nn.Embedding(num_classes, C)`` lookups, not spectrally normalised; running statistics are kept
    with momentum 0.1 and eps 1e-5.
    """

    def __init__(self, num_features: int, num_classes: int, init: str = "N02") -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM, affine=False)
        self.gain = _make_layer(nn.Embedding(num_classes, num_features), "none", init)
        self.bias = _make_layer(nn.Embedding(num_classes, num_features), "none", init)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        scale = 1.0 + self.gain(y)[:, :, None, None]
        shift = self.bias(y)[:, :, None, None]
        return self.norm(x) * scale + shift


class GBlock(nn.Module):
    """cBN -> ReLU -> 2x nearest upsample -> conv3x3 -> cBN -> ReLU -> conv3x3, plus a shortcut
    (upsample -> conv1x1; learnable because the block upsamples)."""

    def __init__(
        self, in_channels: int, out_channels: int, num_classes: int, spectral_norm: str, init: str
    ) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_channels, num_classes, init)
        self.conv1 = _make_layer(nn.Conv2d(in_channels, out_channels, 3, padding=1), spectral_norm, init)
        self.bn2 = ConditionalBatchNorm2d(out_channels, num_classes, init)
        self.conv2 = _make_layer(nn.Conv2d(out_channels, out_channels, 3, padding=1), spectral_norm, init)
        self.conv_sc = _make_layer(nn.Conv2d(in_channels, out_channels, 1), spectral_norm, init)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = F.relu(self.bn1(x, y))
        h = F.interpolate(h, scale_factor=2)  # default mode is nearest
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h, y)))
        shortcut = self.conv_sc(F.interpolate(x, scale_factor=2))
        return h + shortcut


class Generator(nn.Module):
    """Class-conditional BigGAN generator: ``forward(z, y)`` -> images in [-1, 1].

    SN-Linear dim_z -> 4*g_ch x bottom_width^2, three up-sampling GBlocks of constant width 4*g_ch
    (4 -> 8 -> 16 -> 32 with the defaults), BN (affine) -> ReLU -> SN-conv3x3 -> tanh.
    ``image_channels`` is an extension (3 in the reference) for grey-scale data.
    """

    n_blocks = 3

    def __init__(
        self,
        num_classes: int = 10,
        g_ch: int = 64,
        dim_z: int = 128,
        bottom_width: int = 4,
        spectral_norm: str = "own",
        init: str = "N02",
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        _check_positive(
            num_classes=num_classes, g_ch=g_ch, dim_z=dim_z, bottom_width=bottom_width,
            image_channels=image_channels,
        )
        _check_choice("spectral_norm", spectral_norm, SPECTRAL_NORM_MODES)
        _check_choice("init", init, INIT_SCHEMES)
        self.num_classes = num_classes
        self.dim_z = dim_z
        self.bottom_width = bottom_width
        self.resolution = bottom_width * 2**self.n_blocks
        width = 4 * g_ch
        self.width = width

        self.linear = _make_layer(nn.Linear(dim_z, width * bottom_width**2), spectral_norm, init)
        self.blocks = nn.ModuleList(
            GBlock(width, width, num_classes, spectral_norm, init) for _ in range(self.n_blocks)
        )
        self.output_bn = nn.BatchNorm2d(width, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.output_conv = _make_layer(nn.Conv2d(width, image_channels, 3, padding=1), spectral_norm, init)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.dim_z:
            raise ValueError(f"z must have shape (batch, {self.dim_z}); got {tuple(z.shape)}")
        _check_labels(y, z.shape[0], self.num_classes)
        h = self.linear(z).view(z.shape[0], self.width, self.bottom_width, self.bottom_width)
        for block in self.blocks:
            h = block(h, y)
        h = F.relu(self.output_bn(h))
        return torch.tanh(self.output_conv(h))


# --------------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------------


class DBlock(nn.Module):
    """[ReLU ->] conv3x3 -> ReLU -> conv3x3 [-> avgpool 2], plus a shortcut.

    The shortcut is a learnable 1x1 conv when channels change or the block downsamples, otherwise
    identity. Its order follows the reference: without pre-activation (first block) avgpool ->
    conv1x1, with pre-activation conv1x1 -> avgpool. (Both are linear per pixel / per window, so the
    order changes only the cost, not the result.)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        preactivation: bool,
        downsample: bool,
        spectral_norm: str,
        init: str,
    ) -> None:
        super().__init__()
        self.preactivation = preactivation
        self.downsample = downsample
        self.conv1 = _make_layer(nn.Conv2d(in_channels, out_channels, 3, padding=1), spectral_norm, init)
        self.conv2 = _make_layer(nn.Conv2d(out_channels, out_channels, 3, padding=1), spectral_norm, init)
        self.conv_sc: nn.Module | None = None
        if in_channels != out_channels or downsample:
            self.conv_sc = _make_layer(nn.Conv2d(in_channels, out_channels, 1), spectral_norm, init)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(x)

    def shortcut(self, x: Tensor) -> Tensor:
        if self.conv_sc is None:
            return x
        if self.preactivation:
            x = self.conv_sc(x)
            return F.avg_pool2d(x, 2) if self.downsample else x
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return self.conv_sc(x)


class Discriminator(nn.Module):
    """Projection discriminator: logit = linear(h) + <embed[y], h>, h the pooled feature.

    Four DBlocks of width 4*d_ch (32 -> 16 -> 8 -> 8 -> 8 with 32x32 input); the first has no
    pre-activation, only the first two downsample. Head: ReLU, global SUM pooling -> h.

    Seams for distillation: ``forward_features(x) -> h`` (B, feature_dim),
    ``forward_head(h, y) -> logit`` (B, 1), ``forward_with_features(x, y) -> (logit, h)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        d_ch: int = 64,
        spectral_norm: str = "own",
        init: str = "N02",
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, d_ch=d_ch, image_channels=image_channels)
        _check_choice("spectral_norm", spectral_norm, SPECTRAL_NORM_MODES)
        _check_choice("init", init, INIT_SCHEMES)
        self.num_classes = num_classes
        width = 4 * d_ch
        self.feature_dim = width

        layers = dict(spectral_norm=spectral_norm, init=init)
        self.blocks = nn.Sequential(
            DBlock(image_channels, width, preactivation=False, downsample=True, **layers),
            DBlock(width, width, preactivation=True, downsample=True, **layers),
            DBlock(width, width, preactivation=True, downsample=False, **layers),
            DBlock(width, width, preactivation=True, downsample=False, **layers),
        )
        self.linear = _make_layer(nn.Linear(width, 1), spectral_norm, init)
        self.embed = _make_layer(nn.Embedding(num_classes, width), spectral_norm, init)

    def forward_features(self, x: Tensor) -> Tensor:
        """Globally sum-pooled post-ReLU feature (B, feature_dim): the one the logit is computed from."""
        if x.dim() != 4:
            raise ValueError(f"images must have shape (batch, channels, H, W); got {tuple(x.shape)}")
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def forward_head(self, features: Tensor, y: Tensor) -> Tensor:
        """Projection head: (B, feature_dim) features and labels -> (B, 1) logits."""
        _check_labels(y, features.shape[0], self.num_classes)
        projection = (self.embed(y) * features).sum(dim=1, keepdim=True)
        return self.linear(features) + projection

    def forward_with_features(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Logit and pooled feature from one pass (one spectral-norm update per layer)."""
        features = self.forward_features(x)
        return self.forward_head(features, y), features

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x), y)
