"""Summaries over seeds for result tables: mean ± sample std, bootstrap intervals, and a verdict on a difference.

Every table of the project reports the **sample** standard deviation (``ddof = 1``) over runs. Intervals are
percentile bootstraps (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13) with a fixed
seed, so a table regenerated from the same files prints the same numbers. With 5 seeds a bootstrap interval
is narrower than a t interval would be; tables say which one they use.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_DRAWS = 10_000


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof = 1``; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("mean_std of no values")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def bootstrap_mean_ci(values: Sequence[float], level: float = 0.95, draws: int = BOOTSTRAP_DRAWS,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    array = np.asarray(values, dtype=np.float64)
    if array.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(array, size=(draws, array.size), replace=True).mean(axis=1)
    return _percentiles(means, level)


def bootstrap_difference_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95,
                            draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)``, resampling each group on its own."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    differences = (rng.choice(a, size=(draws, a.size)).mean(axis=1)
                   - rng.choice(b, size=(draws, b.size)).mean(axis=1))
    return _percentiles(differences, level)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def compare(candidate: Sequence[float], baseline: Sequence[float], lower_is_better: bool = True,
            level: float = 0.95) -> dict:
    """Is ``candidate`` better than ``baseline``? A verdict that can say no.

    ``difference`` = mean(candidate) − mean(baseline); ``ci`` its bootstrap interval. The verdict is
    ``"yes"`` when the interval excludes 0 on the better side, ``"no"`` when it excludes 0 on the worse side,
    and ``"not resolved"`` otherwise (or with fewer than 2 runs per group). ``exceeds_spread`` says whether
    the difference is larger than the larger of the two groups' sample std (the seed-to-seed spread).
    """
    difference = mean_std(candidate)[0] - mean_std(baseline)[0]
    low, high = bootstrap_difference_ci(candidate, baseline, level)
    better_sign = -1.0 if lower_is_better else 1.0
    if math.isnan(low):
        verdict = "not resolved"
    elif better_sign * low > 0 and better_sign * high > 0:
        verdict = "yes"
    elif better_sign * low < 0 and better_sign * high < 0:
        verdict = "no"
    else:
        verdict = "not resolved"
    spread = max(mean_std(candidate)[1], mean_std(baseline)[1])
    return {"difference": difference, "ci": (low, high), "verdict": verdict, "spread": spread,
            "exceeds_spread": abs(difference) > spread, "n": (len(candidate), len(baseline))}


def verdict_line(candidate: Sequence[float], baseline: Sequence[float], names: tuple[str, str], unit: str,
                 lower_is_better: bool = True) -> str:
    """One line for a README or a report: :func:`compare`'s verdict in bold, the difference with its interval
    and the group sizes, and whether it is larger than the seed spread; with fewer than 2 values in a group,
    ``**not resolved** (too few seeds: ...)``. ``names``: (candidate, baseline); ``unit``: e.g. ``"FD"``."""
    if len(candidate) < 2 or len(baseline) < 2:
        return f"**not resolved** (too few seeds: {len(candidate)} {names[0]}, {len(baseline)} {names[1]})"
    c = compare(candidate, baseline, lower_is_better=lower_is_better)
    spread = "larger" if c["exceeds_spread"] else "smaller"
    return (f"**{c['verdict']}**, {c['difference']:+.2f} {unit} (95% CI [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}], "
            f"n = {c['n'][0]} vs {c['n'][1]}), {spread} than the seed spread ({c['spread']:.2f})")
