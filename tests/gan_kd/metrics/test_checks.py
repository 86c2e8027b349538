"""gan_kd.metrics.checks: channel spread and memorisation on hand-made inputs and small Gaussian sets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan_kd.metrics import checks

# ---------------------------------------------------------------------------------------------- channel spread


def test_channel_spread_is_zero_for_grey_images():
    grey = torch.randint(0, 256, (7, 1, 32, 32), dtype=torch.uint8).expand(7, 3, 32, 32).contiguous()
    assert checks.channel_spread(grey) == 0.0


def test_channel_spread_of_one_pixel():
    image = torch.tensor([10, 40, 100], dtype=torch.uint8).view(1, 3, 1, 1)
    # (|10-40| + |40-100| + |10-100|) / 3 = (30 + 60 + 90) / 3
    assert checks.channel_spread(image) == pytest.approx(60.0, abs=1e-12)


def test_channel_spread_no_uint8_wraparound():
    """255 vs 0 must count 255, not the wrapped uint8 difference."""
    image = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert checks.channel_spread(image) == pytest.approx((255 + 0 + 255) / 3)


def test_channel_spread_is_a_mean_over_pixels_and_images():
    # image 1: one coloured pixel (spread 60) and three grey ones; image 2: all grey. 8 pixels, one of 60.
    images = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    images[0, :, 0, 1] = torch.tensor([10, 40, 100], dtype=torch.uint8)
    images[0, :, 1, 1] = 77
    assert checks.channel_spread(images) == pytest.approx(60.0 / 8)


def test_channel_spread_over_chunks():
    """More than one chunk of 1000 images: the same mean as a direct computation."""
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (2100, 3, 2, 2), dtype=np.uint8))
    x = images.double()
    direct = ((x[:, 0] - x[:, 1]).abs() + (x[:, 1] - x[:, 2]).abs() + (x[:, 0] - x[:, 2]).abs()).mean() / 3
    assert checks.channel_spread(images) == pytest.approx(float(direct), rel=1e-12)


def test_channel_spread_of_a_red_tint():
    grey = torch.full((3, 3, 4, 4), 100, dtype=torch.uint8)
    grey[:, 0] += 40
    assert checks.channel_spread(grey) == pytest.approx(80 / 3)


def test_channel_spread_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        checks.channel_spread(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------- training radii


def brute_training_radii(subset: np.ndarray, pool: np.ndarray) -> np.ndarray:
    out = []
    for i, t in enumerate(subset):
        others = [np.linalg.norm(t - x) for j, x in enumerate(subset) if j != i] + [np.linalg.norm(t - x) for x in pool]
        out.append(min(others))
    return np.array(out)


def test_training_radii_exclude_the_image_itself():
    subset = torch.tensor([[0.0], [10.0], [11.5]], dtype=torch.float64)
    pool = torch.tensor([[3.0], [20.0]], dtype=torch.float64)
    # 0 -> 3 (pool), 10 -> 11.5 (subset), 11.5 -> 10 (subset); never 0 (itself)
    assert checks.training_radii(subset, pool).tolist() == [3.0, 1.5, 1.5]


def test_training_radii_match_brute_force(monkeypatch):
    rng = np.random.default_rng(1)
    subset, pool = rng.normal(size=(23, 4)), rng.normal(size=(40, 4))
    expected = brute_training_radii(subset, pool)
    got = checks.training_radii(torch.from_numpy(subset), torch.from_numpy(pool))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    monkeypatch.setattr(checks, "DISTANCE_BATCH", 5)  # the chunked path must skip the right diagonal
    np.testing.assert_allclose(checks.training_radii(torch.from_numpy(subset), torch.from_numpy(pool)).numpy(),
                               expected, rtol=1e-10)


def test_training_radii_of_a_single_training_image():
    assert checks.training_radii(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [6.0, 8.0]])).tolist() == [5.0]


# ---------------------------------------------------------------------------------------------- memorisation


def gaussian(n: int, seed: int, dim: int = 4) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, dim)))


def test_copies_of_the_training_images_are_memorised():
    subset, pool = gaussian(20, 0), gaussian(400, 1)
    out = checks.memorisation(subset.repeat(3, 1), subset, pool)
    assert out == {"memorised": 1.0, "nn_ratio": 0.0}


def test_unseen_samples_are_rarely_memorised():
    """Samples drawn like the real data but never trained on: a sample is memorised only if it is the nearest
    real neighbour of its nearest training image, which happens for ~|S| / |S ∪ P| of them (here ~1%)."""
    subset, pool = gaussian(20, 2), gaussian(2000, 3)
    fake = gaussian(600, 4)
    out = checks.memorisation(fake, subset, pool)
    assert out["memorised"] < 0.05
    assert 0.75 < out["nn_ratio"] < 1.33  # as near the training images as equally many unseen ones


def test_near_copies_are_memorised_and_far_samples_are_not():
    subset, pool = gaussian(20, 5), gaussian(400, 6)
    near = subset + 1e-3 * gaussian(20, 7)
    out = checks.memorisation(near, subset, pool)
    assert out["memorised"] == 1.0 and out["nn_ratio"] < 0.01
    far = gaussian(20, 8) + 100.0
    out = checks.memorisation(far, subset, pool)
    assert out["memorised"] == 0.0 and out["nn_ratio"] == pytest.approx(1.0, abs=0.05)


def test_memorised_share_counts_each_sample():
    subset, pool = gaussian(20, 9), gaussian(400, 10)
    fake = torch.cat([subset[:5], gaussian(15, 11) + 100.0])  # 5 copies, 15 far away
    assert checks.memorisation(fake, subset, pool)["memorised"] == pytest.approx(5 / 20)


def test_memorisation_uses_cached_radii():
    subset, pool, fake = gaussian(20, 12), gaussian(100, 13), gaussian(30, 14)
    radii = checks.training_radii(subset, pool)
    assert checks.memorisation(fake, subset, pool, radii) == checks.memorisation(fake, subset, pool)


def test_memorisation_nn_ratio_uses_an_equally_large_unseen_set():
    """nn_ratio compares with the first |S| pool images only: a fake that copies a later pool image is not at 0."""
    subset, pool = gaussian(10, 15), gaussian(100, 16)
    fake = pool[50:60].clone()
    out = checks.memorisation(fake, subset, pool)
    d_train = torch.cdist(fake, subset).min(dim=1).values
    d_unseen = torch.cdist(fake, pool[:10]).min(dim=1).values
    assert out["nn_ratio"] == pytest.approx(float((d_train / d_unseen).median()))


@pytest.mark.parametrize("sizes", [(0, 5, 5), (5, 0, 5), (5, 5, 0)])
def test_memorisation_needs_every_set(sizes):
    n_fake, n_subset, n_pool = sizes
    with pytest.raises(ValueError, match="memorisation needs"):
        checks.memorisation(gaussian(n_fake, 0), gaussian(n_subset, 1), gaussian(n_pool, 2))


def test_nn_ratio_compares_equally_large_sets_when_the_pool_is_smaller_than_the_subset():
    """A subset larger than the unseen pool (large data fractions): a random part of the subset as large as the
    pool stands for it, so samples drawn like the data score ~1 instead of being pulled below 1 by the larger set."""
    rng = torch.Generator().manual_seed(3)
    subset, pool, fake = (torch.randn(n, 8, generator=rng, dtype=torch.float64) for n in (2000, 200, 500))
    assert 0.85 < checks.memorisation(fake, subset, pool)["nn_ratio"] < 1.15
