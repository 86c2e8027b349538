"""Markdown tables from evaluated run directories (``result.json`` + ``config.json`` + ``training.json``)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from gan_kd.evaluate import mean_std

PRESET_ROWS = {"da": "DA (baseline)", "da-kd": "DA + KD", "vkd": "DA + VkD", "vkd-whiten": "DA + VkD w/ whitening"}


def load_run(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        raise FileNotFoundError(f"{result_path} not found: run `gan-kd evaluate {run_dir}` first")
    run = {"dir": str(run_dir), "result": json.loads(result_path.read_text()),
           "config": json.loads((run_dir / "config.json").read_text())}
    training = run_dir / "training.json"
    run["training"] = json.loads(training.read_text()) if training.is_file() else {}
    return run


def build_table(run_dirs: list[Path], metric: str) -> str:
    """One row per preset, one column per (dataset, fraction); cells are mean ± std over runs (seeds)."""
    runs = [load_run(d) for d in run_dirs]
    cells: dict[tuple, list[float]] = defaultdict(list)
    columns, rows, labels = [], [], set()
    for run in runs:
        metrics = run["result"]["metrics"]
        if metric not in metrics:
            raise ValueError(f"{run['dir']}/result.json has no {metric!r} (it has {', '.join(metrics)})")
        config = run["config"]
        column = (config["dataset"], config["data_fraction"])
        row = config["preset"]
        columns += [column] if column not in columns else []
        rows += [row] if row not in rows else []
        cells[row, column].append(metrics[metric]["mean"])
        labels.add(run["result"]["labels"].get(metric, metric))
    if len(labels) != 1:
        raise ValueError(f"runs measured {metric!r} with different networks: {', '.join(sorted(labels))}")
    label = labels.pop()
    rows.sort(key=lambda r: list(PRESET_ROWS).index(r) if r in PRESET_ROWS else len(PRESET_ROWS))
    header = [f"{label} ↓ (mean ± std over runs)"] + [f"{d} {f:g}" for d, f in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = []
        for column in columns:
            found = cells.get((row, column))
            if not found:
                values.append("—")
                continue
            mean, std = mean_std(found)
            values.append(f"{mean:.2f} ± {std:.2f} (n={len(found)})")
        lines.append("| " + " | ".join([PRESET_ROWS.get(row, row)] + values) + " |")
    return "\n".join(lines) + "\n"


def provenance(run_dirs: list[Path]) -> str:
    """Per run: preset, seed, iterations, wall time, hardware and the evaluation settings."""
    lines = ["| run | preset | seed | data | iterations | train wall time | eval samples | hardware |", "|---|---|---|---|---|---|---|---|"]
    for run in (load_run(d) for d in run_dirs):
        config, result, training = run["config"], run["result"], run["training"]
        wall = training.get("wall_time_s")
        lines.append(f"| {run['dir']} | {config['preset']} | {config['seed']} | {config['dataset']} {config['data_fraction']:g} "
                     f"| {config['iterations']} (best at {result['iteration']}) | {f'{wall:.0f} s' if wall else '?'} "
                     f"| {result['num_samples']} × {result['repeats']} | {result['hardware']} |")
    return "\n".join(lines) + "\n"
