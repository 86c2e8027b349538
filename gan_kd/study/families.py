"""The final evaluation's metrics in families, each with the direction that is better, and one table per family.

:data:`FAMILIES` is the one list: the ablation's tables, the agreement rule (:mod:`.agreement`) and the metrics
the re-scoring checks for are derived from it. A metric is better lower (↓), higher (↑) or closest to 1 (→ 1:
density and the nearest-neighbour ratio, whose real-vs-real value is about 1); a "→ 1" metric is compared as
|x − 1|. Every comparison is :func:`compare_metric`, which is :func:`kd_core.stats.compare` on those values.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from gan_kd.study.reading import row_label, row_runs
from kd_core.stats import bootstrap_mean_ci, compare, mean_std

LOWER, HIGHER, CLOSEST_TO_ONE = "↓", "↑", "→ 1"
MIN_SEEDS = 2  # per row, for an interval and a comparison
BASELINE = "da"


class Family(NamedTuple):
    name: str
    metrics: tuple[tuple[str, str], ...]  # (evaluation.json key, better direction)


FAMILIES = (
    Family("label-free FD and KID", (("fd_vgg", LOWER), ("kid_vgg_mean", LOWER))),
    Family("classifier space", (("fd", LOWER), ("icfd", LOWER), ("cls_acc", HIGHER))),
    Family("k-NN fidelity and diversity (label-free)",
           (("precision", HIGHER), ("recall", HIGHER), ("density", CLOSEST_TO_ONE), ("coverage", HIGHER))),
    Family("intra-class label-free FD", (("icfd_vgg", LOWER),)),
    Family("GAN-train accuracy", (("gan_train_acc", HIGHER),)),
    Family("memorisation", (("memorised", LOWER), ("nn_ratio", CLOSEST_TO_ONE))),
    Family("colour", (("channel_spread", LOWER),)),
)
DIRECTIONS = {key: direction for family in FAMILIES for key, direction in family.metrics}
FAMILY_OF = {key: family.name for family in FAMILIES for key, _ in family.metrics}
# The real data's own value where it is not the metric's ideal, and where evaluation.json records it.
REFERENCES = {"cls_acc": ("reference_scores", "cls_acc"), "channel_spread": ("reference_scores", "channel_spread"),
              "gan_train_acc": ("metrics", "gan_train_real_acc")}


def metric_values(runs: list[dict], key: str) -> list[float]:
    """Each run's value of ``key`` (the mean over the evaluation's repeats), in the order of ``runs``; runs
    without it are left out."""
    return [r["result"]["metrics"][key]["mean"] for r in runs if key in r["result"]["metrics"]]


def compared(values: list[float], key: str) -> list[float]:
    """The quantity a comparison of ``key`` is made on: |x − 1| for a "→ 1" metric, the values otherwise."""
    return [abs(v - 1) for v in values] if DIRECTIONS[key] == CLOSEST_TO_ONE else list(values)


def compare_metric(candidate: list[dict], baseline: list[dict], key: str, min_seeds: int = MIN_SEEDS) -> dict | None:
    """:func:`kd_core.stats.compare` of two rows' runs on ``key`` in its better direction (``None`` when a row
    has fewer than ``min_seeds`` runs with it)."""
    a, b = metric_values(candidate, key), metric_values(baseline, key)
    if len(a) < min_seeds or len(b) < min_seeds:
        return None
    return compare(compared(a, key), compared(b, key), lower_is_better=DIRECTIONS[key] != HIGHER)


def label(runs: list[dict], key: str) -> str:
    """The evaluation's own name of ``key`` (it names the feature space), else the key."""
    return next((r["result"]["labels"][key] for r in runs if key in r["result"].get("labels", {})), key)


def difference_interval(comparison: dict | None) -> str:
    """``difference [low, high]`` of a :func:`compare_metric` result; "—" for None."""
    if comparison is None:
        return "—"
    low, high = comparison["ci"]
    return f"{comparison['difference']:+.3g} [{low:+.3g}, {high:+.3g}]"


def _delta(comparison: dict | None) -> str:
    side = {"yes": " better", "no": " worse"}.get(comparison["verdict"], "") if comparison else ""
    return difference_interval(comparison) + side


def _reference(runs: list[dict], key: str) -> float | None:
    where, name = REFERENCES.get(key, (None, None))
    for run in runs:
        value = run["result"].get(where, {}).get(name) if where else None
        if value is not None:
            return value["mean"] if isinstance(value, dict) else value
    return None


def family_table(runs: list[dict], rows: list[str], family: Family, baseline: str = BASELINE) -> str:
    """One line per (metric, row with runs): mean ± std over seeds, the 95% bootstrap interval of the mean, the
    seeds scored, and Δ vs the baseline with its 95% interval (of |x − 1| for a "→ 1" metric); "—" where missing
    (one line for a metric no run has)."""
    lines = ["| metric | row | mean ± std | 95% CI of the mean | seeds | Δ vs DA (95% CI) |", "|---|---|---|---|---|---|"]
    reference = []
    present = [row for row in rows if row_runs(runs, row)]
    for key, direction in family.metrics:
        name = f"{label(runs, key)} {direction}" + (" (Δ of \\|x − 1\\|)" if direction == CLOSEST_TO_ONE else "")
        if not metric_values(runs, key):
            lines.append(f"| {name} | every row | — | — | 0 of {len(runs)} runs | — |")
            continue
        for i, row in enumerate(present):
            members = row_runs(runs, row)
            values = metric_values(members, key)
            first = name if i == 0 else ""
            if not values:
                lines.append(f"| {first} | {row_label(row)} | — | — | 0 of {len(members)} | — |")
                continue
            mean, std = mean_std(values)
            low, high = bootstrap_mean_ci(values)
            interval = "—" if math.isnan(low) else f"[{low:.4g}, {high:.4g}]"
            delta = "—" if row == baseline else _delta(compare_metric(members, row_runs(runs, baseline), key))
            lines.append(f"| {first} | {row_label(row)} | {mean:.4g} ± {std:.2g} | {interval} "
                         f"| {len(values)} of {len(members)} | {delta} |")
        value = _reference(runs, key)
        if value is not None:
            reference.append(f"{label(runs, key)} {value:.4g}")
    notes = ["", "Real data: " + "; ".join(reference) + "."] if reference else []
    return "\n".join(lines + notes) + "\n"


def family_sections(runs: list[dict], rows: list[str]) -> list[str]:
    """A heading and a table per family of :data:`FAMILIES`."""
    parts = []
    for family in FAMILIES:
        parts += [f"#### {family.name}", "", family_table(runs, rows, family)]
    return parts
