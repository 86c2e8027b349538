"""Seeding, RNG capture/restore and data-limited subsets (kd_core/runtime/seed.py)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kd_core.runtime.seed import capture_rng_state, restore_rng_state, seed_everything, subset_indices


def _draws() -> tuple:
    return (
        [random.random() for _ in range(3)],
        np.random.rand(3).tolist(),
        torch.rand(3).tolist(),
        torch.randint(0, 1000, (4,)).tolist(),
    )


def test_subset_matches_diffaugment_reference_selection():
    # DiffAugment's BigGAN-CIFAR code: np.random.seed(0); np.random.choice(50000, 5000, replace=False)
    expected = np.random.RandomState(0).choice(50000, 5000, replace=False)
    np.testing.assert_array_equal(subset_indices(50000, 0.1, seed=0), expected)


def test_subset_is_distinct_in_range_and_seed_dependent():
    indices = subset_indices(1000, 0.2, seed=3)
    assert len(indices) == 200
    assert len(np.unique(indices)) == 200
    assert indices.min() >= 0 and indices.max() < 1000
    assert not np.array_equal(indices, subset_indices(1000, 0.2, seed=4))
    np.testing.assert_array_equal(indices, subset_indices(1000, 0.2, seed=3))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_smaller_subset_is_prefix_of_larger_one(seed):
    ten = subset_indices(50000, 0.1, seed=seed)
    twenty = subset_indices(50000, 0.2, seed=seed)
    assert len(ten) == 5000 and len(twenty) == 10000
    np.testing.assert_array_equal(twenty[:5000], ten)


def test_full_fraction_is_every_index_in_order():
    np.testing.assert_array_equal(subset_indices(123, 1.0, seed=5), np.arange(123))


def test_subset_does_not_touch_global_numpy_state():
    np.random.seed(11)
    expected = np.random.rand(2)
    np.random.seed(11)
    subset_indices(1000, 0.1, seed=0)
    np.testing.assert_array_equal(np.random.rand(2), expected)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), 1e-6])
def test_bad_fraction_raises(fraction):
    with pytest.raises(ValueError):
        subset_indices(100, fraction)


def test_non_positive_total_raises():
    with pytest.raises(ValueError):
        subset_indices(0, 0.5)


def test_seed_everything_makes_all_generators_repeat():
    seed_everything(123)
    first = _draws()
    seed_everything(123)
    assert _draws() == first
    seed_everything(124)
    assert _draws() != first


def test_capture_restore_reproduces_python_numpy_and_torch_draws():
    seed_everything(0)
    _draws()  # move every generator away from its seeded state
    state = capture_rng_state()
    expected = _draws()
    _draws()
    restore_rng_state(state)
    assert _draws() == expected
