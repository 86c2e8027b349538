"""Property tests for gan_kd.diffaug against the DiffAugment semantics in reference/gan.md §3."""
from __future__ import annotations

import pytest
import torch

from gan_kd.diffaug import (
    diff_augment,
    parse_policy,
    random_brightness,
    random_color,
    random_contrast,
    random_cutout,
    random_saturation,
    random_translation,
)

MAX_SHIFT = 4  # int(32 * 1/8 + 0.5)
CUT = 16  # int(32 * 1/2 + 0.5)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def shift_with_zeros(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Independent slicing reference: out[..., i, j] = x[..., i + dy, j + dx], 0 outside."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(0, -dy): h - max(0, dy), max(0, -dx): w - max(0, dx)] = x[
        ..., max(0, dy): h - max(0, -dy), max(0, dx): w - max(0, -dx)
    ]
    return out


# ---------------------------------------------------------------------------------------- policy


def test_policy_order_is_canonical_and_empty_is_noop():
    assert parse_policy("cutout, translation") == ("translation", "cutout")
    assert parse_policy("color,translation,cutout") == ("color", "translation", "cutout")
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(diff_augment(x, ""), x)


@pytest.mark.parametrize("policy", ["translate", "color,flip", "cutout,cutout"])
def test_bad_policy_raises(policy):
    with pytest.raises(ValueError, match="translation" if policy != "cutout,cutout" else "twice"):
        diff_augment(torch.zeros(1, 3, 8, 8), policy)


# ----------------------------------------------------------------------------------- translation


def test_translation_is_an_integer_shift_with_zero_fill():
    x = torch.randn(48, 3, 32, 32)  # no zero pixels (a.s.), so every shift is identifiable
    out = random_translation(x, generator=seeded(1))
    shifts = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    candidates = torch.stack([shift_with_zeros(x, dy, dx) for dy, dx in shifts])  # (81, B, C, H, W)
    matches = (candidates == out[None]).flatten(2).all(dim=2)  # (81, B)
    assert torch.equal(matches.sum(dim=0), torch.ones(48, dtype=torch.long))
    recovered = {shifts[i] for i in matches.int().argmax(dim=0).tolist()}
    assert len(recovered) > 20  # samples draw their own shifts


def test_translation_shifts_are_uniform_over_minus4_to_4():
    n = 8100
    x = torch.zeros(n, 1, 32, 32)
    x[:, :, 16, 16] = 1.0  # a single pixel; where it lands gives the shift
    out = random_translation(x, generator=seeded(2))
    assert torch.equal(out.flatten(1).sum(dim=1), torch.ones(n))  # never shifted out at |d| <= 4
    where = out.flatten(1).argmax(dim=1)
    dy, dx = 16 - where // 32, 16 - where % 32
    assert dy.abs().max() == MAX_SHIFT and dx.abs().max() == MAX_SHIFT
    counts = torch.bincount((dy + 4) * 9 + (dx + 4), minlength=81).float()
    assert counts.min() > 0.6 * n / 81 and counts.max() < 1.4 * n / 81  # expected 100 each
    assert abs(torch.corrcoef(torch.stack([dy, dx]).float())[0, 1]) < 0.05  # independent axes


# ---------------------------------------------------------------------------------------- cutout


def test_cutout_zeroes_one_clipped_square_of_side_16():
    n = 2000
    x = torch.rand(n, 3, 32, 32) + 0.5  # strictly non-zero
    out = random_cutout(x, generator=seeded(3))
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # same region in every channel
    keep = ~zero
    assert torch.equal(out[keep], x[keep])  # everything else unchanged
    region = zero[:, 0]  # (n, H, W)
    rows, cols = region.any(dim=2), region.any(dim=1)
    assert torch.equal(region, rows[:, :, None] & cols[:, None, :])  # an axis-aligned rectangle
    positions = torch.arange(32)
    for mask in (rows, cols):
        first = torch.where(mask, positions, 99).min(dim=1).values
        last = torch.where(mask, positions, -1).max(dim=1).values
        assert torch.equal(mask.sum(dim=1), last - first + 1)  # contiguous
        length = last - first + 1
        clipped = (first == 0) | (last == 31)
        assert torch.all(length[~clipped] == CUT)
        assert torch.all((length >= CUT // 2) & (length <= CUT))
        # Centre uniform over {0..32}: square starts at centre - 8, so (clipped) first index takes
        # every value 0..24 and last index every value 7..31.
        assert set(first.tolist()) == set(range(0, 25))
        assert set(last.tolist()) == set(range(7, 32))


# ----------------------------------------------------------------------------------------- color


def test_brightness_adds_one_offset_per_image_within_half():
    x = torch.randn(500, 3, 8, 8)
    offset = random_brightness(x, seeded(4)) - x
    per_image = offset[:, :1, :1, :1]
    assert torch.allclose(offset, per_image.expand_as(offset), atol=1e-6)
    assert per_image.min() >= -0.5 and per_image.max() <= 0.5
    assert per_image.min() < -0.45 and per_image.max() > 0.45  # covers the range


def test_saturation_scales_deviation_from_channel_mean_by_factor_in_0_2():
    x = torch.randn(500, 3, 8, 8)
    mean_c = x.mean(dim=1, keepdim=True)
    out = random_saturation(x, seeded(5))
    assert torch.allclose(out.mean(dim=1, keepdim=True), mean_c, atol=1e-5)
    per_image = ((out - mean_c) * (x - mean_c)).flatten(1).sum(1) / ((x - mean_c) ** 2).flatten(1).sum(1)
    assert torch.allclose(out - mean_c, per_image[:, None, None, None] * (x - mean_c), atol=1e-4)
    assert per_image.min() >= 0 and per_image.max() <= 2
    assert per_image.min() < 0.1 and per_image.max() > 1.9


def test_contrast_scales_deviation_from_image_mean_by_factor_in_half_to_1_5():
    x = torch.randn(500, 3, 8, 8)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = random_contrast(x, seeded(6))
    assert torch.allclose(out.mean(dim=(1, 2, 3), keepdim=True), mean, atol=1e-5)
    per_image = ((out - mean) * (x - mean)).flatten(1).sum(1) / ((x - mean) ** 2).flatten(1).sum(1)
    assert torch.allclose(out - mean, per_image[:, None, None, None] * (x - mean), atol=1e-4)
    assert per_image.min() >= 0.5 and per_image.max() <= 1.5
    assert per_image.min() < 0.55 and per_image.max() > 1.45


def test_color_on_flat_grey_images_is_pure_brightness():
    # Equal channels make saturation a no-op and a constant image makes contrast a no-op.
    x = torch.rand(200, 1, 1, 1).expand(200, 3, 8, 8).contiguous() * 2 - 1
    offset = diff_augment(x, "color", generator=seeded(7)) - x
    assert torch.allclose(offset, offset[:, :1, :1, :1].expand_as(offset), atol=1e-6)
    assert offset.abs().max() <= 0.5


def test_color_order_is_brightness_saturation_contrast():
    x = torch.randn(4, 3, 8, 8)
    g1, g2 = seeded(8), seeded(8)
    expected = random_contrast(random_saturation(random_brightness(x, g1), g1), g1)
    assert torch.equal(random_color(x, g2), expected)


# ------------------------------------------------------------------------------------ all ops


def test_gradients_pass_through_every_op():
    x = torch.randn(8, 3, 32, 32, requires_grad=True)
    weights = torch.randn(8, 3, 32, 32)
    (diff_augment(x, "color,translation,cutout", seeded(9)) * weights).sum().backward()
    assert x.grad.isfinite().all() and x.grad.abs().sum() > 0


def test_translation_cutout_gradient_counts_surviving_pixels():
    # out = mask * shift(x): d(sum out)/dx is 1 exactly on the pixels that end up in the output.
    x = (torch.rand(8, 3, 32, 32) + 0.5).requires_grad_()
    out = diff_augment(x, "translation,cutout", seeded(10))
    out.sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}
    assert x.grad.sum() == (out != 0).sum()


def test_same_seed_reproduces_and_samples_differ():
    x = torch.randn(16, 3, 32, 32)
    policy = "color,translation,cutout"
    a = diff_augment(x, policy, seeded(11))
    assert torch.equal(a, diff_augment(x, policy, seeded(11)))
    assert not torch.equal(a, diff_augment(x, policy, seeded(12)))
    # the same image repeated in a batch gets different augmentations
    same = x[:1].expand(16, -1, -1, -1)
    out = diff_augment(same, policy, seeded(13))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 16


def test_output_shape_dtype_and_non_square_images():
    x = torch.randn(3, 1, 28, 20, dtype=torch.float64)
    out = diff_augment(x, "color,translation,cutout", seeded(14))
    assert out.shape == x.shape and out.dtype == torch.float64 and out.is_contiguous()


def test_rejects_non_batched_input():
    with pytest.raises(ValueError, match="batch"):
        diff_augment(torch.zeros(3, 32, 32))
