"""Reading the committed run copies into numbers: the runs, their curves and FD, overfitting, accuracies, claims."""
from __future__ import annotations

import json
import math
from pathlib import Path

from gan_kd.report import EVALUATION_FILE, load_run
from gan_kd.study.rows import CLAIMS
from gan_kd.study.runner import ASSETS_FILE
from kd_core.runtime.metrics import metric_curves
from kd_core.stats import compare


def load_runs(results: Path) -> list[dict]:
    """Every finished run copy under ``results`` (a folder per run)."""
    runs = []
    for evaluation in sorted(Path(results).glob(f"*/{EVALUATION_FILE}")):
        folder = evaluation.parent
        row, _, rest = folder.name.partition("_f")
        assets = folder / ASSETS_FILE
        runs.append({**load_run(folder), "name": folder.name, "dir": folder, "row": row,
                     "assets": json.loads(assets.read_text()) if assets.is_file() else {}, "curves": _curves(folder)})
    return runs


def _curves(folder: Path) -> dict[str, list[tuple[int, float]]]:
    try:
        return metric_curves(folder)
    except FileNotFoundError:
        return {}


def _fd(run: dict) -> float:
    return run["result"]["metrics"]["fd"]["mean"]


def overfitting_summary(run: dict, curve: str = "eval/fd") -> dict:
    """Where the FD curve (``curve``: the classifier's, or ``eval/fd_vgg``) bottoms out, how far it rises after,
    and the probe's gap at the start and end."""
    fd = run["curves"].get(curve, [])
    gap = run["curves"].get("probe/d_gap", [])
    rt = run["curves"].get("probe/rt", [])
    if not fd:
        return {}
    best_step, best = min(fd, key=lambda point: point[1])
    last_step, last = fd[-1]
    two_thirds = min(fd, key=lambda point: abs(point[0] - 2 * last_step / 3))[1]
    return {"best_step": best_step, "best_fd": best, "last_step": last_step, "last_fd": last,
            "rise": last / best - 1, "last_third": last / two_thirds - 1, "gap_first": gap[0][1] if gap else math.nan,
            "gap_last": gap[-1][1] if gap else math.nan, "gap_max": max(v for _, v in gap) if gap else math.nan,
            "rt_last": rt[-1][1] if rt else math.nan}


def len_subset(config: dict) -> int:
    from gan_kd.data import subset_indices

    return len(subset_indices(60_000, config["data_fraction"], config.get("subset_seed", 0)))


def accuracies(runs: list[dict], row: str) -> list[float]:
    """The GAN-test accuracies (in percent) of ``row``'s scored runs."""
    return [r["result"]["metrics"]["cls_acc"]["mean"] * 100 for r in runs
            if r["row"] == row and "cls_acc" in r["result"]["metrics"]]


def claim_results(runs: list[dict]) -> list[dict]:
    """Each claim of :data:`CLAIMS` tested on ``runs``: the rows' FDs and :func:`kd_core.stats.compare`
    (``None`` when a row has fewer than 2 finished seeds)."""
    results = []
    for claim, candidate, baseline in CLAIMS:
        a = [_fd(r) for r in runs if r["row"] == candidate]
        b = [_fd(r) for r in runs if r["row"] == baseline]
        results.append({"claim": claim, "candidate": candidate, "baseline": baseline, "n": (len(a), len(b)),
                        "compare": compare(a, b) if len(a) >= 2 and len(b) >= 2 else None})
    return results
