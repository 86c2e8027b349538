"""gan_kd.metrics.manifold: density / coverage against Naeem et al.'s definitions, precision / recall wiring.

The brute-force references below are written from the papers' formulas with plain numpy loops, on tiny
sets (tens of 4-d points), so every ball and every comparison can be checked:

* Naeem et al. (ICML 2020), with ``r_i`` the distance from real ``X_i`` to its k-th nearest *other* real:
  density = 1/(kM) Σ_j Σ_i 1[d(Y_j, X_i) < r_i];  coverage = 1/N Σ_i 1[min_j d(Y_j, X_i) < r_i].
* Kynkäänniemi et al. (NeurIPS 2019): precision = share of fakes within (<=) the k-NN radius of some real;
  recall = share of reals within (<=) the k-NN radius of some fake.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan_kd.metrics import manifold

# ---------------------------------------------------------------------------------------------- references


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum()))


def brute_radii(real: np.ndarray, k: int) -> np.ndarray:
    """r_i: distance from real i to its k-th nearest other real sample (other = a different index)."""
    radii = np.empty(len(real))
    for i in range(len(real)):
        others = sorted(_distance(real[i], real[j]) for j in range(len(real)) if j != i)
        radii[i] = others[k - 1]
    return radii


def brute_density_coverage(fake: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    radii = brute_radii(real, k)
    inside = 0
    for j in range(len(fake)):
        for i in range(len(real)):
            if _distance(fake[j], real[i]) < radii[i]:
                inside += 1
    covered = 0
    for i in range(len(real)):
        nearest = min(_distance(fake[j], real[i]) for j in range(len(fake)))
        if nearest < radii[i]:
            covered += 1
    return inside / (k * len(fake)), covered / len(real)


def brute_precision_recall(fake: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    real_radii, fake_radii = brute_radii(real, k), brute_radii(fake, k)
    precision = np.mean([any(_distance(y, real[i]) <= real_radii[i] for i in range(len(real))) for y in fake])
    recall = np.mean([any(_distance(x, fake[j]) <= fake_radii[j] for j in range(len(fake))) for x in real])
    return float(precision), float(recall)


def points(n: int, seed: int, shift: float = 0.0, scale: float = 1.0, dim: int = 4) -> torch.Tensor:
    """Float32 Gaussian points (the library computes in float32; the references read the same values)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy((rng.normal(size=(n, dim)) * scale + shift).astype(np.float32))


def as64(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy()


# ---------------------------------------------------------------------------------------------- radii


@pytest.mark.parametrize("k", [1, 3, 5])
def test_kth_neighbour_radii_match_brute_force(k):
    real = points(30, seed=1)
    np.testing.assert_allclose(manifold.kth_neighbour_radii(real, k).double().numpy(), brute_radii(as64(real), k),
                               rtol=1e-5, atol=1e-6)


def test_kth_neighbour_radii_skip_only_the_row_itself():
    # 1-d points 0, 1, 3, 6, 10: k = 1 -> distance to the nearest *other* point; k = 2 -> the second nearest.
    real = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    assert manifold.kth_neighbour_radii(real, 1).tolist() == [1.0, 1.0, 2.0, 3.0, 4.0]
    assert manifold.kth_neighbour_radii(real, 2).tolist() == [3.0, 2.0, 3.0, 4.0, 7.0]
    # A duplicate is another sample: its copy is its nearest neighbour, at 0.
    assert manifold.kth_neighbour_radii(torch.tensor([[0.0], [0.0], [5.0]]), 1).tolist() == [0.0, 0.0, 5.0]


# ---------------------------------------------------------------------------------------------- density / coverage


@pytest.mark.parametrize("seed, shift, scale, k", [
    (0, 0.0, 1.0, 5),   # same distribution
    (1, 0.7, 1.0, 5),   # shifted: fewer balls reached
    (2, 0.0, 0.4, 5),   # concentrated: density above coverage's share
    (3, 0.0, 2.0, 3),   # spread out, another k
    (4, 1.5, 0.5, 1),
])
def test_density_coverage_match_naeem_definitions(seed, shift, scale, k):
    real = points(30, seed=100 + seed)
    fake = points(24, seed=200 + seed, shift=shift, scale=scale)
    out = manifold.density_coverage(fake, real, k=k)
    density, coverage = brute_density_coverage(as64(fake), as64(real), k)
    assert out["density"] == pytest.approx(density, abs=1e-12)
    assert out["coverage"] == pytest.approx(coverage, abs=1e-12)


def test_density_coverage_cases_are_informative():
    """The parametrised cases above are not all 0 or 1: the references discriminate."""
    values = []
    for seed, shift, scale, k in [(0, 0.0, 1.0, 5), (1, 0.7, 1.0, 5), (2, 0.0, 0.4, 5)]:
        values.append(brute_density_coverage(as64(points(24, 200 + seed, shift, scale)), as64(points(30, 100 + seed)), k))
    assert len({round(d, 6) for d, _ in values}) == 3
    assert any(0 < c < 1 for _, c in values)
    assert max(d for d, _ in values) > 1  # density is not capped at 1 (concentrated samples)


def test_density_coverage_strict_inequality_on_the_radius():
    """A sample exactly at distance r_i from X_i is outside X_i's ball (Naeem et al.'s strict '<')."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])  # k = 1: every r_i = 1
    on_boundary = torch.tensor([[1.0], [4.0]])
    out = manifold.density_coverage(on_boundary, real, k=1)
    density, coverage = brute_density_coverage(as64(on_boundary), as64(real), 1)
    # [1.0] coincides with X_1 (inside its ball, distance 0 < 1) and lies at distance 1 of X_0 and X_2 (outside);
    # [4.0] lies at distance 1 of X_3 (outside). One ball of four is reached, once.
    assert (density, coverage) == (0.5, 0.25)
    assert out == {"density": 0.5, "coverage": 0.25}


def test_density_coverage_cached_radii_give_the_same_result():
    real, fake = points(30, seed=5), points(20, seed=6, shift=0.3)
    radii = manifold.kth_neighbour_radii(real)
    assert manifold.density_coverage(fake, real, real_radii=radii) == manifold.density_coverage(fake, real)


def test_density_coverage_batches_agree(monkeypatch):
    """Chunking the fake set (DISTANCE_BATCH) changes nothing."""
    real, fake = points(30, seed=7), points(25, seed=8, shift=0.2)
    whole = manifold.density_coverage(fake, real)
    monkeypatch.setattr(manifold, "DISTANCE_BATCH", 7)
    assert manifold.density_coverage(fake, real) == whole


def test_identical_sets_are_fully_covered():
    real = points(30, seed=9)
    out = manifold.density_coverage(real.clone(), real)
    assert out["coverage"] == 1.0
    # each X_j sits in its own ball and in the balls of the reals that count it among their k nearest
    assert out["density"] == pytest.approx(brute_density_coverage(as64(real), as64(real), 5)[0], abs=1e-12)
    assert out["density"] >= 1 / manifold.DC_NEIGHBOURHOOD


def test_far_away_samples_have_zero_density_and_coverage():
    real = points(30, seed=10)
    fake = points(20, seed=11, shift=100.0)
    assert manifold.density_coverage(fake, real) == {"density": 0.0, "coverage": 0.0}


@pytest.mark.parametrize("n_fake, n_real", [(5, 30), (30, 5), (3, 3)])
def test_density_coverage_k_too_large_raises(n_fake, n_real):
    with pytest.raises(ValueError, match=r"k = 5 needs more than 5 samples"):
        manifold.density_coverage(points(n_fake, 0), points(n_real, 1), k=5)


def test_density_coverage_width_mismatch_raises():
    with pytest.raises(ValueError, match="of one width"):
        manifold.density_coverage(points(10, 0, dim=3), points(10, 1, dim=4), k=2)


def test_density_coverage_do_not_move_the_global_rng():
    state = torch.random.get_rng_state()
    manifold.density_coverage(points(20, 0), points(20, 1))
    assert torch.equal(state, torch.random.get_rng_state())


# ---------------------------------------------------------------------------------------------- precision / recall


def test_precision_recall_match_brute_force():
    real, fake = points(30, seed=12), points(25, seed=13, shift=0.8, scale=0.6)
    out = manifold.precision_recall(fake, real, k=3)
    precision, recall = brute_precision_recall(as64(fake), as64(real), 3)
    assert 0 < recall < 1 and 0 < precision <= 1
    assert out["precision"] == pytest.approx(precision, abs=1e-6)
    assert out["recall"] == pytest.approx(recall, abs=1e-6)


def test_precision_recall_identical_sets():
    real = points(40, seed=14)
    assert manifold.precision_recall(real.clone(), real) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_disjoint_far_sets():
    real = points(40, seed=15)
    fake = points(40, seed=16, shift=50.0)
    assert manifold.precision_recall(fake, real) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_one_point_repeated():
    """Mode collapse to one real sample: every fake lies in that real's ball (precision 1), and the fakes' balls
    have radius 0, so only that one real is recalled."""
    real = points(40, seed=17)
    fake = real[7:8].repeat(20, 1)
    out = manifold.precision_recall(fake, real)
    assert out["precision"] == 1.0
    assert out["recall"] == pytest.approx(1 / 40)


def test_precision_recall_argument_order():
    """precision is about the fakes (first argument), recall about the reals (second)."""
    real = points(40, seed=18)
    fake = torch.cat([real[:10], points(30, seed=19, shift=50.0)])  # 10 of 40 fakes are real; 30 are far away
    out = manifold.precision_recall(fake, real)
    assert out["precision"] == pytest.approx(10 / 40)
    swapped = manifold.precision_recall(real, fake)
    assert swapped["recall"] == pytest.approx(10 / 40)


def test_precision_recall_k_too_large_raises():
    with pytest.raises(ValueError, match=r"precision/recall with k = 3 needs more than 3 samples"):
        manifold.precision_recall(points(3, 0), points(30, 1))
