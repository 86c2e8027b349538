"""Markdown tables from finished ``classifier-kd train-teacher|distill`` run directories.

:func:`build_table` puts one row per (dataset, teacher, student) and one column per method label, like the
papers' tables. Each cell is the mean ± sample standard deviation (n−1) of ``best_top1`` over the runs that
fall into it, with the number of runs (seeds), e.g. ``73.41 ± 0.12 (3)``; a single run shows ``73.41 (1)``.

Where a run goes:

* ``distill`` with a teacher: row (dataset, teacher, student), column from the method (:func:`method_label`):
  ``KD``, ``KD+LS`` (``--zscore``), ``DKD``, ``DKD+LS``, ``FitNet``, ``VkD``, ``DCD``, ``DCD+KD``, ``RSD``;
  a VkD run with another projector / normaliser (VkD Table 6) gets its own column, e.g.
  ``VkD (projector=linear)``.
* ``distill --method ce`` (no teacher): column ``CE (student)`` of every row whose student is that model.
* ``train-teacher``: column ``teacher`` of every row whose teacher is that model.

A run that matches no row gets a row of its own (``— → student`` or ``teacher → —``). Two different runs
with the same seed in one cell are refused: they would be counted as two seeds.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from classifier_kd.recipes import method_losses
from kd_core.runtime.run import load_run as kd_load_run
from kd_core.stats import mean_std, verdict_line

METHOD_LABELS = {"ce": "CE (student)", "kd": "KD", "dkd": "DKD", "fitnet": "FitNet", "vkd": "VkD", "dcd": "DCD",
                 "dcd+kd": "DCD+KD", "rsd": "RSD", "spkd": "SPKD", "pkd": "PKD", "kd-dlgan": "KD-DLGAN",
                 "label-distillation": "Label distillation"}
# --loss terms (sorted names) of a "custom" run -> the method they amount to
# loss options that make a different method variant (their own column) when not at these defaults
_VARIANT_OPTIONS = {"vkd": {"projector": "orthogonal", "normalizer": "layernorm"}}
COLUMN_ORDER = ["teacher", "CE (student)", "KD", "KD+LS", "DKD", "DKD+LS", "FitNet", "VkD", "DCD", "DCD+KD", "RSD",
                "SPKD", "PKD", "KD-DLGAN", "Label distillation"]
TEACHER, STUDENT_CE = "teacher", "CE (student)"
# The papers' claims a table can test: (claim, candidate column, baseline column). A claim is tested in every row
# that has both columns; higher top-1 is better.
CLAIMS = [
    ("KD improves on the student alone (Hinton et al. 2015)", "KD", STUDENT_CE),
    ("logit standardisation improves KD (LS-KD Table 1)", "KD+LS", "KD"),
    ("logit standardisation improves DKD (LS-KD Table 1)", "DKD+LS", "DKD"),
    ("DCD added to KD improves on KD (DCD Table 1)", "DCD+KD", "KD"),
    ("RSD improves on KD (RSD Table 1)", "RSD", "KD"),
    ("VkD improves on KD (VkD Table 1)", "VkD", "KD"),
    ("VkD improves on FitNet (VkD Table 1)", "VkD", "FitNet"),
    ("VkD's orthogonal projector improves on a linear one (VkD Table 6)", "VkD", "VkD (projector=linear)"),
    ("VkD's teacher normalisation improves on none (VkD Table 6)", "VkD", "VkD (normalizer=none)"),
]
CLAIMS_BEGIN = "<!-- classifier-claims: {table} -->"
CLAIMS_END = "<!-- /classifier-claims: {table} -->"


def load_run(run_dir: Path) -> dict:
    """``{"dir", "result", "config"}`` of a finished run; FileNotFoundError if it has no ``result.json``."""
    run_dir = Path(run_dir)
    kind = "train-teacher|distill"
    if (run_dir / "config.json").is_file():
        kind = "distill" if "method" in json.loads((run_dir / "config.json").read_text()) else "train-teacher"
    return kd_load_run(run_dir, command=f"`classifier-kd {kind} ... --out {run_dir}`")


def method_label(config: dict) -> str:
    """The table column of a run, from its config: ``teacher`` for train-teacher runs, else the method."""
    if "method" not in config:
        return TEACHER
    losses = config.get("losses") or []
    method = config["method"]
    if method == "custom":
        names = tuple(sorted(loss["name"] for loss in losses))
        loss_sets = {tuple(sorted(losses)): method for method, losses in method_losses().items()}
        method = loss_sets.get(names, "+".join(names))
    label = METHOD_LABELS.get(method, method)
    if config.get("zscore") or any(loss.get("options", {}).get("zscore") for loss in losses):
        label += "+LS"
    variant = []
    for loss in losses:
        for key, default in _VARIANT_OPTIONS.get(loss["name"], {}).items():
            value = loss.get("options", {}).get(key, default)
            if value != default:
                variant.append(f"{key}={value}")
    return f"{label} ({', '.join(variant)})" if variant else label


def _cell(runs: list[dict]) -> str:
    values = [run["result"]["best_top1"] for run in runs]
    if len(values) == 1:
        return f"{values[0]:.2f} (1)"
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f} ({len(values)})"


def _column_rank(column: str, appearance: list[str]) -> tuple:
    """Paper order; a variant (``VkD (projector=linear)``) right after its method; others last."""
    base = column if column in COLUMN_ORDER else column.split(" (")[0]
    rank = COLUMN_ORDER.index(base) if base in COLUMN_ORDER else len(COLUMN_ORDER)
    return rank, column != base, appearance.index(column)


def _arrow(name: str | None) -> str:
    return name if name else "—"


def _cells(run_dirs: list[Path]) -> tuple[list[tuple], list[str], dict[tuple, list[dict]], list[tuple[dict, str]]]:
    """(rows, columns, {(row, column): runs}, [(run, column)]) of the finished runs in ``run_dirs``."""
    runs, seen = [], set()
    for run_dir in run_dirs:
        key = Path(run_dir).resolve()
        if key not in seen:  # the same directory twice is one run, not two seeds
            seen.add(key)
            runs.append(load_run(run_dir))
    if not runs:
        raise ValueError("no run directories given")

    rows: list[tuple] = []  # (dataset, teacher, student), in order of appearance
    labelled = [(run, method_label(run["config"])) for run in runs]
    for run, label in labelled:
        config = run["config"]
        if label not in (TEACHER, STUDENT_CE):
            row = (config["dataset"], config.get("teacher"), config["model"])
            rows += [row] if row not in rows else []
    cells: dict[tuple, list[dict]] = defaultdict(list)
    columns: list[str] = []
    for run, label in labelled:
        config = run["config"]
        dataset, model = config["dataset"], config["model"]
        if label == TEACHER:
            targets = [row for row in rows if row[0] == dataset and row[1] == model] or [(dataset, model, None)]
        elif label == STUDENT_CE:
            targets = [row for row in rows if row[0] == dataset and row[2] == model] or [(dataset, None, model)]
        else:
            targets = [(dataset, config.get("teacher"), model)]
        for row in targets:
            rows += [row] if row not in rows else []
            for other in cells[row, label]:
                if other["config"].get("seed") == config.get("seed"):
                    raise ValueError(f"{other['dir']} and {run['dir']} are both seed {config.get('seed')} of "
                                     f"{label} for {_arrow(row[1])} → {_arrow(row[2])} on {dataset}: "
                                     "pass one of them")
            cells[row, label].append(run)
        columns += [label] if label not in columns else []
    columns = sorted(columns, key=lambda column: _column_rank(column, columns))
    return rows, columns, cells, labelled


def build_table(run_dirs: list[Path]) -> str:
    """The markdown table of best test top-1 over seeds, the papers' claims it can test, then the provenance
    of every run."""
    rows, columns, cells, labelled = _cells(run_dirs)
    header = ["dataset", "teacher → student"] + columns
    lines = ["Best test top-1 (%): mean ± sample std over seeds (number of seeds).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [_cell(cells[row, column]) if cells.get((row, column)) else "—" for column in columns]
        lines.append("| " + " | ".join([row[0], f"{_arrow(row[1])} → {_arrow(row[2])}"] + values) + " |")
    tested = claim_results(rows, cells)
    if tested:
        lines += ["", "## Claims", "",
                  "Each claim of the papers that this table can test, in every row holding both of its columns. "
                  "Verdict: *yes* when the 95% bootstrap interval of the difference of mean top-1 excludes 0 on "
                  "the better side, *no* when it excludes 0 on the worse side, *not resolved* otherwise (and with "
                  "fewer than 2 seeds in a column).", ""]
        lines += [f"- {_row_name(item['row'])}: {_claim_sentence(item)}" for item in tested]
    return "\n".join(lines) + "\n\n" + provenance(labelled)


def _row_name(row: tuple) -> str:
    return f"{row[0]}, {_arrow(row[1])} → {_arrow(row[2])}"


def claim_results(rows: list[tuple], cells: dict[tuple, list[dict]]) -> list[dict]:
    """Every claim of :data:`CLAIMS` in every row with both columns: its row and one-line verdict
    (:func:`kd_core.stats.verdict_line`; higher top-1 is better)."""
    results = []
    for row in rows:
        for claim, candidate, baseline in CLAIMS:
            a = [run["result"]["best_top1"] for run in cells.get((row, candidate), [])]
            b = [run["result"]["best_top1"] for run in cells.get((row, baseline), [])]
            if a and b:
                verdict = verdict_line(a, b, names=(candidate, baseline), unit="points top-1", lower_is_better=False)
                results.append({"row": row, "claim": claim, "verdict": verdict})
    return results


def _claim_sentence(item: dict) -> str:
    return f"{item['claim']}: {item['verdict']}."


def claims_block(run_dirs: list[Path], table: str) -> str:
    """README's lines for the table written to ``table``: one per claim and row, between the
    :data:`CLAIMS_BEGIN` / :data:`CLAIMS_END` markers named after ``table``."""
    rows, _, cells, _ = _cells(run_dirs)
    tested = claim_results(rows, cells)
    counts = sorted({len(runs) for (row, column), runs in cells.items() if column != TEACHER and runs})
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}" if counts else "0"
    lines = [CLAIMS_BEGIN.format(table=table),
             f"* **Classifiers (`{table}`)**, seeds per cell: {seeds}. One line per claim of the papers "
             "that the table can test:"]
    lines += [f"  * {_row_name(item['row'])}: {_claim_sentence(item)}" for item in tested] or \
        ["  * no claim of the papers can be tested on these runs yet."]
    lines.append(CLAIMS_END.format(table=table))
    return "\n".join(lines)


def _hardware(result: dict) -> str:
    hardware = result.get("hardware", "?")
    if isinstance(hardware, dict):  # result.json of older runs
        return ", ".join(f"{key} {value}" for key, value in hardware.items() if value is not None)
    return str(hardware)


def provenance(labelled: list[tuple[dict, str]]) -> str:
    """Per run: directory, column, seed, epochs, best top-1, hardware, device × world size, wall time, command."""
    lines = ["## Provenance", "",
             "| run | column | seed | epochs | best top-1 (epoch) | hardware | device × world size | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for run, label in labelled:
        config, result = run["config"], run["result"]
        epochs = str(result.get("epochs", config.get("epochs", "?")))
        if config.get("max_steps_per_epoch"):
            epochs += f" (≤{config['max_steps_per_epoch']} steps each)"
        if config.get("data_fraction", 1.0) != 1.0:
            epochs += f", {config['data_fraction']:g} of the training set"
        device = result.get("device", config.get("device", "?"))
        world = result.get("world_size", 1)
        lines.append(f"| {run['dir']} | {label} | {config.get('seed', '?')} | {epochs} "
                     f"| {result['best_top1']:.2f} ({result.get('best_epoch', '?')}) | {_hardware(result)} "
                     f"| {device} × {world} | {result.get('wall_time', '?')} |")
    lines += ["", "Commands (`config.json` in each run directory records every resolved option):", "", "```"]
    for run, _ in labelled:
        lines.append(f"# {run['dir']}")
        lines.append(run["result"].get("command", "(not recorded)"))
    lines.append("```")
    return "\n".join(lines) + "\n"
