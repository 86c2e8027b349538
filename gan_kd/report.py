"""Markdown tables from evaluated run directories (``evaluation.json`` + ``config.json`` + ``result.json``)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from gan_kd.presets import PRESET_LABELS
from kd_core.runtime.run import RESULT_FILE
from kd_core.runtime.run import load_run as kd_load_run
from kd_core.stats import mean_std

# What `gan-kd evaluate` writes; result.json is the training run's own summary, as for classifier-kd runs.
EVALUATION_FILE = "evaluation.json"
LEGACY_TRAINING_FILE = "training.json"  # runs from before one result-file name: training.json + result.json


def run_files(run_dir: Path) -> tuple[Path, Path]:
    """(evaluation, training summary) of a run directory, in either layout."""
    run_dir = Path(run_dir)
    if not (run_dir / EVALUATION_FILE).is_file() and (run_dir / LEGACY_TRAINING_FILE).is_file():
        return run_dir / RESULT_FILE, run_dir / LEGACY_TRAINING_FILE
    return run_dir / EVALUATION_FILE, run_dir / RESULT_FILE


def load_run(run_dir: Path) -> dict:
    """``{"dir", "result", "config", "training"}``: ``result`` is the evaluation, ``training`` the run's summary.

    Built on :func:`kd_core.runtime.run.load_run` (config.json + result.json, as for classifier runs), plus the
    evaluation that `gan-kd evaluate` writes beside them.
    """
    run_dir = Path(run_dir)
    evaluation_path, training_path = run_files(run_dir)
    if not evaluation_path.is_file():
        kind = _classifier_run(run_dir)
        if kind:
            raise ValueError(f"{run_dir} is {kind}: gan-kd table needs the {EVALUATION_FILE} of `gan-kd evaluate` "
                             f"and a gan-kd config.json (with 'preset'); use classifier-kd table for classifier runs")
        raise FileNotFoundError(f"{evaluation_path} not found: run `gan-kd evaluate {run_dir}` first")
    try:
        result = json.loads(evaluation_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{run_dir} is not a readable gan-kd run: {' '.join(str(error).split())}") from error
    # finished=False: evaluated but still training (evaluate --checkpoint last) has no summary yet
    run = kd_load_run(run_dir, "gan-kd train", result_file=training_path.name, finished=False)
    config, training = run["config"], run["result"]
    if not isinstance(result, dict) or "metrics" not in result or not isinstance(config, dict) or "preset" not in config:
        raise ValueError(f"{run_dir} is not a gan-kd run: gan-kd table needs the {EVALUATION_FILE} of `gan-kd evaluate` "
                         f"(with 'metrics') and a gan-kd config.json (with 'preset'); use classifier-kd table "
                         f"for classifier runs")
    return {"dir": str(run_dir), "result": result, "config": config, "training": training}


def _classifier_run(run_dir: Path) -> str:
    """'a classifier-kd run' when ``run_dir`` holds one (its result.json has best_top1), else ''."""
    try:
        result = json.loads((run_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return ""
    return "a classifier-kd run" if isinstance(result, dict) and "best_top1" in result else ""


def build_table(run_dirs: list[Path], metric: str) -> str:
    """One row per preset, one column per (dataset, fraction); cells are mean ± std over runs (seeds)."""
    runs = [load_run(d) for d in run_dirs]
    cells: dict[tuple, list[float]] = defaultdict(list)
    columns, rows, labels = [], [], set()
    for run in runs:
        metrics = run["result"]["metrics"]
        if metric not in metrics:
            raise ValueError(f"{run_files(Path(run['dir']))[0]} has no {metric!r} (it has {', '.join(metrics)})")
        config = run["config"]
        column = (config["dataset"], config["data_fraction"])
        row = config["preset"]
        columns += [column] if column not in columns else []
        rows += [row] if row not in rows else []
        cells[row, column].append((metrics[metric]["mean"], metrics[metric]["std"], len(metrics[metric]["values"])))
        labels.add(run["result"]["labels"].get(metric, metric))
    if len(labels) != 1:
        raise ValueError(f"runs measured {metric!r} with different networks: {', '.join(sorted(labels))}")
    label = labels.pop()
    rows.sort(key=lambda r: list(PRESET_LABELS).index(r) if r in PRESET_LABELS else len(PRESET_LABELS))
    header = [f"{label} ↓ (mean ± std over n runs)"] + [f"{d} {f:g}" for d, f in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = []
        for column in columns:
            found = cells.get((row, column))
            if not found:
                values.append("—")
                continue
            if len(found) == 1:  # one run: no spread over runs to report, only over its evaluation sample sets
                value, repeat_std, repeats = found[0]
                values.append(f"{value:.2f} (n=1; ±{repeat_std:.2f} over {repeats} sample sets)")
                continue
            mean, std = mean_std([value for value, _, _ in found])
            values.append(f"{mean:.2f} ± {std:.2f} (n={len(found)})")
        lines.append("| " + " | ".join([PRESET_LABELS.get(row, row)] + values) + " |")
    return "\n".join(lines) + "\n"


def train_command(config: dict, run_dir: str) -> str:
    """The ``gan-kd train`` command that reproduces a run: every option that differs from the defaults."""
    import dataclasses

    from gan_kd.config import TrainConfig
    from gan_kd.presets import PRESETS

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    preset = PRESETS.get(config.get("preset"), {})
    parts = ["gan-kd train", f"--out {run_dir}", f"--preset {config['preset']}"]
    for key, value in config.items():
        if key not in defaults or key in ("preset", "distill") or key in preset and preset[key] == value:
            continue
        default = defaults[key]
        if isinstance(default, tuple):
            default = list(default)
        if value == default:
            continue
        flag = "--workers" if key == "num_workers" else "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            parts.append(f"{flag} {','.join(map(str, value))}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def provenance(run_dirs: list[Path]) -> str:
    """Per run: preset, seed, iterations, wall time, hardware and the evaluation settings."""
    lines = ["| run | preset | seed | data | iterations | train wall time | eval samples | hardware (evaluation) |", "|---|---|---|---|---|---|---|---|"]
    for run in (load_run(d) for d in run_dirs):
        config, result, training = run["config"], run["result"], run["training"]
        wall = training.get("wall_time_s")
        lines.append(f"| {run['dir']} | {config['preset']} | {config['seed']} | {config['dataset']} {config['data_fraction']:g} "
                     f"| {config['iterations']} (best at {result['iteration']}) | {f'{wall:.0f} s' if wall else '?'} "
                     f"| {result['num_samples']} × {result['repeats']} | {result['hardware']} |")
    lines += ["", "Commands (each followed by `gan-kd evaluate RUN --checkpoint best` with the sample count and repeats above;",
              "`config.json` in each run directory records every option and the git commit):", "", "```"]
    lines += [train_command(load_run(d)["config"], str(d)) for d in run_dirs]
    lines.append("```")
    return "\n".join(lines) + "\n"
