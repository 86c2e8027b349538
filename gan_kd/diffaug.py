"""DiffAugment: differentiable augmentations applied to every image D sees, real and fake.

Semantics follow the DiffAugment BigGAN-CIFAR config (reference/gan.md §3). Every sample draws its
own parameters, shared across its channels; all ops are differentiable w.r.t. the images, so the
G step's gradients pass through them. The official BigGAN-CIFAR scripts use ``"translation,cutout"``;
``"color"`` is recommended only for datasets of a few hundred images.

- color, in this order, on [-1, 1] images without clamping:
  brightness ``x + U(-0.5, 0.5)``; saturation ``(x - mean_c) * U(0, 2) + mean_c`` with mean_c the
  per-pixel mean over channels; contrast ``(x - mean) * U(0.5, 1.5) + mean`` with mean over C, H, W.
- translation (ratio 1/8): integer shifts uniform over {-s..s} per axis, s = int(size * 1/8 + 0.5)
  (4 px at 32); pixels shifted in from outside are 0 (mid-grey in [-1, 1]).
- cutout (ratio 1/2): one square of side c = int(size * 1/2 + 0.5) (16 at 32) per image, multiplied
  by 0; its centre is uniform over {0..size} per axis for even c ({0..size-1} for odd c), it covers
  rows centre - c//2 .. centre - c//2 + c - 1 and is clipped at the border.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Order of application, whatever the order in the policy string (the official policies list
# their ops in this order anyway).
AUGMENTATIONS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"cutout, translation"`` -> ``("translation", "cutout")``; ``""`` -> ``()``."""
    names = [name.strip() for name in policy.split(",") if name.strip()]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown DiffAugment op(s) {unknown} in policy {policy!r}; allowed: {', '.join(AUGMENTATIONS)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"DiffAugment policy {policy!r} names an op twice")
    return tuple(name for name in AUGMENTATIONS if name in names)


def diff_augment(
    x: Tensor, policy: str = "translation,cutout", generator: torch.Generator | None = None
) -> Tensor:
    """Augment a batch (B, C, H, W) with the ops in ``policy`` (comma-separated, see module doc).

    ``generator`` makes the draws reproducible; it may live on another device than ``x``.
    """
    ops = parse_policy(policy)
    if x.dim() != 4:
        raise ValueError(f"images must have shape (batch, channels, H, W); got {tuple(x.shape)}")
    # The output keeps the input's memory format (channels_last batches stay channels_last for D's convolutions).
    memory_format = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                     and not x.is_contiguous() else torch.contiguous_format)
    if "color" in ops:
        x = random_color(x, generator)
    if "translation" in ops:
        x = random_translation(x, TRANSLATION_RATIO, generator)
    if "cutout" in ops:
        x = random_cutout(x, CUTOUT_RATIO, generator)
    return x.contiguous(memory_format=memory_format)


def random_color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Brightness, then saturation, then contrast."""
    x = random_brightness(x, generator)
    x = random_saturation(x, generator)
    return random_contrast(x, generator)


def random_brightness(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Add one U(-0.5, 0.5) offset per image."""
    return x + (_uniform_per_sample(x, generator) - 0.5)


def random_saturation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Scale each pixel's deviation from its channel mean by one U(0, 2) factor per image."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform_per_sample(x, generator) * 2.0) + mean


def random_contrast(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Scale the deviation from the image mean (over C, H, W) by one U(0.5, 1.5) factor per image."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform_per_sample(x, generator) + 0.5) + mean


def random_translation(
    x: Tensor, ratio: float = TRANSLATION_RATIO, generator: torch.Generator | None = None
) -> Tensor:
    """Shift each image by its own integer (dy, dx), |d| <= int(size * ratio + 0.5), zero fill.

    ``out[b, :, i, j] = x[b, :, i + dy_b, j + dx_b]``, 0 where that index falls outside the image.
    Implemented as one gather from a zero-padded copy, so the backward pass is a scatter-add.
    """
    batch, _, height, width = x.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = _randint_per_sample(-max_dy, max_dy + 1, x, generator)
    dx = _randint_per_sample(-max_dx, max_dx + 1, x, generator)
    padded = F.pad(x, (max_dx, max_dx, max_dy, max_dy))
    rows = torch.arange(height, device=x.device)[None, :] + (dy + max_dy)[:, None]  # (B, H)
    cols = torch.arange(width, device=x.device)[None, :] + (dx + max_dx)[:, None]  # (B, W)
    samples = torch.arange(batch, device=x.device)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[samples, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return shifted.permute(0, 3, 1, 2)


def random_cutout(
    x: Tensor, ratio: float = CUTOUT_RATIO, generator: torch.Generator | None = None
) -> Tensor:
    """Zero one square of side int(size * ratio + 0.5) per image (clipped at the border)."""
    _, _, height, width = x.shape
    size_h, size_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    # Centre range as in the reference: {0..size} for an even side, {0..size-1} for an odd one.
    centre_y = _randint_per_sample(0, height + 1 - size_h % 2, x, generator)
    centre_x = _randint_per_sample(0, width + 1 - size_w % 2, x, generator)
    inside_rows = _inside(torch.arange(height, device=x.device), centre_y - size_h // 2, size_h)
    inside_cols = _inside(torch.arange(width, device=x.device), centre_x - size_w // 2, size_w)
    cut = inside_rows[:, :, None] & inside_cols[:, None, :]  # (B, H, W)
    return x * (~cut).to(x.dtype)[:, None]


def _inside(positions: Tensor, start: Tensor, length: int) -> Tensor:
    """(B, N) mask of ``start_b <= position < start_b + length``."""
    return (positions[None, :] >= start[:, None]) & (positions[None, :] < start[:, None] + length)


def _draw_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x.device


def _uniform_per_sample(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(0, 1) of shape (B, 1, 1, 1): one draw per sample, broadcast over channels and pixels."""
    draw = torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=_draw_device(x, generator))
    return draw.to(device=x.device, dtype=x.dtype)


def _randint_per_sample(
    low: int, high: int, x: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Integers uniform over {low..high-1}, shape (B,)."""
    draw = torch.randint(low, high, (x.shape[0],), generator=generator, device=_draw_device(x, generator))
    return draw.to(x.device)
