"""Reading the committed run copies into numbers: the runs, their rows, curves and FD, overfitting."""
from __future__ import annotations

import json
import math
from pathlib import Path

from gan_kd.report import EVALUATION_FILE, load_run
from gan_kd.study.rows import ROWS, split_row
from gan_kd.study.runner import ASSETS_FILE
from kd_core.runtime.metrics import metric_curves


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


def row_runs(runs: list[dict], row: str) -> list[dict]:
    """The runs of ``row`` by seed: those named for it, at the preset's or an explicit weight (``vkd@kd0.3``)."""
    return sorted((r for r in runs if split_row(r["row"])[0] == row), key=lambda r: r["config"]["seed"])


def row_label(row: str) -> str:
    return ROWS[row][0] if row in ROWS else row


def kd_weight(config: dict) -> float | None:
    """The distillation term's weight a run used (its config.json); None for a run without a teacher."""
    return config.get("kd_weight", 1.0) if config.get("distill") else None


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
