"""Calibrating each distillation row's weight at the chosen regime (issue 25, item 4), by one rule for every row.

1. **Probe**: the row at weight 1 (``--kd-weight 1``, seed 0, the full run); ``gan-kd train`` records the
   weighted distillation term over D's hinge loss (``d/kd_ratio``) at the first evaluation and at the end.
2. **Plan** (:func:`plan`): a term that stays within :data:`KEEP` of the adversarial loss at both points keeps
   weight 1. Any other row gets a sweep of three weights a factor of 10 apart (spanning 100) centred on the
   weight that brings the term to :data:`TARGET` × (the middle of 0.1–1× on a log scale), from the geometric mean
   of the two ratios, rounded to the 1–3–10 grid. A row with a published weight (:data:`PUBLISHED`) keeps that
   run in the sweep as well, shown beside the calibrated one; the choice is among the calibrated weights.
3. **Select** (:func:`choose`): seed 0 for every swept weight, a second seed for the best two, each scored by
   the label-free FD of 10,000 samples drawn with :data:`SELECTION_SEED`, which no table uses (the tables'
   evaluation draws seeds 0 and 1). The weight with the lower mean over its two seeds is chosen.

Every run is an ordinary study run (``gan_kd.study.runner.execute``: resumable, skipped when finished) of the
row ``<row>@kd<weight>`` (:func:`gan_kd.study.rows.weighted`); :func:`calibration_table` is generated from the
committed copies.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from gan_kd.snapshot import GENERATOR_FILE
from gan_kd.study.rows import ROWS, TEACHERLESS_ROWS, split_row, weighted

KEEP = (0.05, 5.0)       # weight 1 is kept when the term is within this many times D's hinge loss, first and last
TARGET = 0.3             # the sweep's centre: the weight that brings the term to ~0.3x the hinge loss
# Published weights for our reduction: KD-DLGAN's official code puts 10 on each of its two terms *inside* the
# loss (shared/reference/gan.md §6), which our --kd-weight 1 reproduces.
PUBLISHED = {"kd-dlgan": 1.0}
SELECTION_SEED = 1000    # the sample seed of the selection's FD (the tables use seeds 0 and 1)
SELECTION_FILE = "selection.json"
DISTILLATION_ROWS = tuple(row for row in ROWS if row not in TEACHERLESS_ROWS)


def row_weight(row: str) -> float:
    """The ``--kd-weight`` the study's ``row`` trains with: an explicit one in its options, else its preset's, else
    :class:`gan_kd.config.TrainConfig`'s default."""
    from gan_kd.presets import PRESETS
    from gan_kd.config import TrainConfig

    options = ROWS[row][1]
    if "--kd-weight" in options:
        return float(options[options.index("--kd-weight") + 1])
    return float(PRESETS[options[options.index("--preset") + 1]].get("kd_weight", TrainConfig.kd_weight))


def same_command(row: str) -> str | None:
    """The calibration's name for the study's ``row`` (``vkd@kd1`` when vkd trains at weight 1): the same
    ``gan-kd train`` command but for an explicit ``--kd-weight`` equal to the row's own; None for a row without a
    distillation term."""
    return weighted(row, row_weight(row)) if row in DISTILLATION_ROWS else None


def snap(weight: float) -> float:
    """The nearest value on the 1–3–10 grid (..., 0.1, 0.3, 1, 3, 10, ...) on a log scale."""
    power = math.floor(math.log10(weight))
    candidates = [10.0 ** power, 3 * 10.0 ** power, 10.0 ** (power + 1)]
    return float(f"{min(candidates, key=lambda c: abs(math.log(c / weight))):.6g}")


def plan(first: float, end: float) -> list[float]:
    """The weights to sweep from the ratios at weight 1 (first evaluation, end): ``[1.0]`` when both are within
    :data:`KEEP`, else three weights a factor of 10 apart around the one bringing the term to :data:`TARGET`."""
    if all(KEEP[0] <= ratio <= KEEP[1] for ratio in (first, end)):
        return [1.0]
    centre = snap(TARGET / math.sqrt(first * end))
    return [float(f"{centre / 10:.6g}"), centre, float(f"{centre * 10:.6g}")]


def probe_ratio(training: dict) -> tuple[float, float]:
    """(first evaluation, end) ratios of a weight-1 run's ``result.json`` (its ``distillation_ratio``)."""
    ratio = training["distillation_ratio"]
    if ratio["kd_weight"] != 1.0:
        raise ValueError(f"the probe must run at weight 1, not {ratio['kd_weight']}")
    return ratio["first_eval"]["ratio"], ratio["end"]["ratio"]


def sweep_weights(row: str, planned: list[float]) -> list[float]:
    """The weights run for ``row``: the plan, plus its published weight (when it has one)."""
    return sorted(set(planned) | ({PUBLISHED[row]} if row in PUBLISHED else set()))


def selection_command(copy: Path, data_root: str, gan_kd: str = "gan-kd") -> list[str]:
    """The selection score of a finished copy: label-free FD of its committed generator at the unused seed."""
    return [gan_kd, "evaluate", str(Path(copy) / GENERATOR_FILE), "--metrics", "fd_vgg", "--num-samples", "10000",
            "--seed", str(SELECTION_SEED), "--data-root", data_root, "--device", "cpu",
            "--out", str(Path(copy) / SELECTION_FILE)]


def selection_fd(copy: Path) -> float | None:
    path = Path(copy) / SELECTION_FILE
    return json.loads(path.read_text())["metrics"]["fd_vgg"]["mean"] if path.is_file() else None


def best_two(scores: dict[float, float]) -> list[float]:
    """The two weights with the lowest seed-0 selection FD (ties: the smaller weight)."""
    return sorted(scores, key=lambda weight: (scores[weight], weight))[:2]


def choose(scores: dict[float, list[float]]) -> float:
    """Among weights scored on two seeds, the lowest mean selection FD (ties: the smaller weight)."""
    finalists = {weight: values for weight, values in scores.items() if len(values) >= 2}
    if not finalists:
        raise ValueError("no weight has two scored seeds yet")
    return min(finalists, key=lambda weight: (sum(finalists[weight]) / len(finalists[weight]), weight))


def row_record(row: str, copies: dict[tuple[float, int], Path], training: dict[tuple[float, int], dict]) -> dict:
    """Everything the calibration table says about ``row``, from its finished copies: ``copies[(weight, seed)]``
    (``(1.0, 0)`` = the probe) and their ``result.json`` (``training``)."""
    record: dict = {"row": row, "published": PUBLISHED.get(row)}
    if (1.0, 0) not in training:
        return {**record, "state": "probe missing"}
    first, end = probe_ratio(training[1.0, 0])
    planned = plan(first, end)
    record.update({"ratio_at_1": {"first_eval": first, "end": end}, "plan": planned,
                   "kept": planned == [1.0], "runs": {}})
    fds = {key: selection_fd(copy) for key, copy in copies.items()}  # each selection.json read once
    for weight, seed in sorted(copies):
        ratio = training[weight, seed].get("distillation_ratio", {})
        record["runs"][f"{weight:g}/s{seed}"] = {
            "weight": weight, "seed": seed, "selection_fd": fds[weight, seed],
            "ratio_first_eval": ratio.get("first_eval", {}).get("ratio"), "ratio_end": ratio.get("end", {}).get("ratio")}
    if record["kept"]:
        return {**record, "state": "done", "chosen": 1.0}
    seed0 = {weight: fds[weight, 0] for weight in planned if (weight, 0) in fds}
    if len(seed0) < len(planned) or None in seed0.values():
        return {**record, "state": "sweep running"}
    record["finalists"] = best_two(seed0)
    both = {weight: [fds[weight, seed] for seed in (0, 1) if (weight, seed) in fds]
            for weight in record["finalists"]}
    if any(len(values) < 2 or None in values for values in both.values()):
        return {**record, "state": "second seeds running"}
    return {**record, "state": "done", "chosen": choose(both)}


def calibration_table(records: list[dict]) -> str:
    """Markdown: per row, the ratio at weight 1, the rule's outcome, every swept weight and the choice."""
    lines = ["| row | term / D hinge at weight 1 (first eval → end) | rule | weight: selection FD (seed 0, seed 1) "
             "[term / hinge at the end] | chosen | published |", "|---|---|---|---|---|---|"]
    for record in records:
        label = ROWS[record["row"]][0]
        published = f"{record['published']:g}" if record.get("published") is not None else "—"
        if "ratio_at_1" not in record:
            lines.append(f"| {label} | (probe missing) | | | | {published} |")
            continue
        ratio = record["ratio_at_1"]
        rule = "keeps 1 (within 0.05–5×)" if record["kept"] else "sweep " + ", ".join(f"{w:g}" for w in record["plan"])
        by_weight: dict[float, list[dict]] = {}
        for run in record["runs"].values():
            by_weight.setdefault(run["weight"], []).append(run)
        cells = []
        for weight, runs in sorted(by_weight.items()):
            fds = ", ".join("…" if run["selection_fd"] is None else f"{run['selection_fd']:.2f}"
                            for run in sorted(runs, key=lambda r: r["seed"]))
            end = runs[0]["ratio_end"]
            cells.append(f"{weight:g}: {fds}" + (f" [{end:.2g}×]" if end is not None else ""))
        chosen = f"**{record['chosen']:g}**" if "chosen" in record else record["state"]
        lines.append(f"| {label} | {ratio['first_eval']:.3g} → {ratio['end']:.3g} | {rule} | {'; '.join(cells)} "
                     f"| {chosen} | {published} |")
    return "\n".join(lines) + "\n"


def chosen_weights(records: list[dict]) -> dict[str, float]:
    return {record["row"]: record["chosen"] for record in records if "chosen" in record}


def weight_problems(rows: list[str], chosen: dict[str, float]) -> list[str]:
    """Why the study may not train each of ``rows`` yet (issue 25: the study uses the calibrated weight): a
    distillation row the calibration has not chosen a weight for, or one that trains at another weight than the
    chosen one (it is frozen in gan_kd/presets.py). ``chosen``: ``results/gan_calibration.json``'s."""
    problems = []
    for row in rows:
        if row not in DISTILLATION_ROWS:
            continue
        if row not in chosen:
            problems.append(f"{row} (no calibrated weight yet)")
        elif row_weight(row) != chosen[row]:
            problems.append(f"{row} (trains at --kd-weight {row_weight(row):g}, the calibration chose {chosen[row]:g})")
    return problems


def load_records(results: Path, rows: list[str]) -> list[dict]:
    """:func:`row_record` of every row from the finished copies under ``results`` (only ``<row>@kd<w>`` runs)."""
    from gan_kd.study.reading import load_runs

    found: dict[str, tuple[dict, dict]] = {}
    for run in load_runs(results) if Path(results).is_dir() else []:
        base, weight = split_row(run["row"])
        if weight is None:
            continue
        copies, training = found.setdefault(base, ({}, {}))
        key = (weight, run["config"]["seed"])
        copies[key], training[key] = Path(run["dir"]), run["training"]
    return [row_record(row, *found.get(row, ({}, {}))) for row in rows]


__all__ = ["DISTILLATION_ROWS", "KEEP", "PUBLISHED", "SELECTION_FILE", "SELECTION_SEED", "TARGET", "best_two",
           "calibration_table", "choose", "chosen_weights", "plan", "probe_ratio", "row_record", "row_weight",
           "same_command", "selection_command", "selection_fd", "snap", "load_records", "sweep_weights", "weight_problems",
           "weighted"]
