"""The figure a reader looks at first (issue 27, item 4): a row of samples per method, then every row's
label-free FD against the iteration (mean over seeds, min–max band), in one PNG.

Each sample row comes from the row's lowest-seed committed ``generator_ema.safetensors`` (the best EMA generator,
loaded by :func:`gan_kd.snapshot.load_ema_generator`), sampled by :func:`gan_kd.grids.grid_samples` with the
same latent seed and one sample per class, so every row shows the same latents and labels. The PNG's
``Description`` text chunk records the rows, seeds and labels shown.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gan_kd.snapshot import GENERATOR_FILE
from gan_kd.study.reading import kd_weight, row_runs
from gan_kd.study.rows import curve_panels

FIGURE_SEED = 0            # the latent seed of every sample row
CURVE = "eval/fd_vgg"      # the label-free FD logged during training
CURVE_LABEL = "label-free FD (2,000 samples)"


def committed_generator(members: list[dict]) -> dict | None:
    """The lowest-seed run of ``members`` whose copy holds its generator file (None: no copy does)."""
    return next((run for run in members if (Path(run["dir"]) / GENERATOR_FILE).is_file()), None)


def run_has_figure(run: dict) -> bool:
    """Whether the run gives the figure anything: a committed generator or a label-free FD curve."""
    return (Path(run["dir"]) / GENERATOR_FILE).is_file() or bool(run["curves"].get(CURVE))


def row_name(row: str, run: dict) -> str:
    weight = kd_weight(run["config"])
    return row if weight is None else f"{row} (kd {weight:g})"


def sample_rows(runs: list[dict], rows: list[str], seed: int = FIGURE_SEED) -> dict:
    """``{"rows": [(row, run)], "labels": (C,) tensor, "images": uint8 (R, C, 3, H, W), "missing": [row]}``:
    one sample per class from each row's committed generator, the same latents and labels for every row."""
    from gan_kd.metrics.evaluator import to_uint8
    from gan_kd.snapshot import load_ema_generator
    from gan_kd.grids import grid_samples

    shown, images, labels, missing = [], [], None, []
    for row in rows:
        members = row_runs(runs, row)
        run = committed_generator(members)
        if run is None:
            if members:
                missing.append(row)
            continue
        generator, config, _ = load_ema_generator(Path(run["dir"]) / GENERATOR_FILE)
        if labels is None:
            labels = torch.arange(generator.num_classes)
        elif generator.num_classes != len(labels):
            raise ValueError(f"{run['name']}: {generator.num_classes} classes, the rows above have {len(labels)}")
        images.append(to_uint8(grid_samples(generator, labels, config["dim_z"], seed=seed)))
        shown.append((row, run))
    return {"rows": shown, "labels": labels if labels is not None else torch.arange(0),
            "images": torch.stack(images) if images else torch.zeros(0, 0, 3, 32, 32, dtype=torch.uint8),
            "missing": missing}


def _strip(images: torch.Tensor) -> tuple[np.ndarray, dict]:
    """(C, 3, H, W) uint8 -> one (H, C·(W+2)) image and imshow's options: grey when the three channels are equal
    (so grayscale data is shown as grayscale), RGB otherwise (colour on grayscale data stays visible)."""
    padded = torch.nn.functional.pad(images, (1, 1), value=255)
    strip = padded.permute(2, 0, 3, 1).reshape(images.shape[2], -1, 3).numpy()
    if (strip == strip[..., :1]).all():
        return strip[..., 0], {"cmap": "gray", "vmin": 0, "vmax": 255}
    return strip, {}


def curve_panel_groups(runs: list[dict], rows: list[str], column: str) -> tuple[dict[str, dict], list[str]]:
    """``column``'s curves of each row that logged it, grouped into :func:`gan_kd.study.rows.curve_panels`
    (title -> {row name: its seeds' curves}), and the row names (:func:`row_name`) in ``rows``' order."""
    names, curves = {}, {}
    for row in rows:
        members = row_runs(runs, row)
        group = [c for c in (r["curves"].get(column, []) for r in members) if c]
        if group:
            names[row], curves[row] = row_name(row, members[0]), group
    panels = {title: {names[row]: curves[row] for row in members} for title, members in curve_panels(list(curves)).items()}
    return panels, list(names.values())


def first_figure(runs: list[dict], rows: list[str], path: Path, seed: int = FIGURE_SEED) -> dict:
    """Write the PNG and return what it shows: ``rows`` [(row, seed)], ``labels``, ``missing`` (rows with runs
    but no committed generator), ``curves`` (rows with a label-free FD curve)."""
    from gan_kd.plots import pyplot, draw_panels, save_figure

    samples = sample_rows(runs, rows, seed)
    panels, names = curve_panel_groups(runs, rows, CURVE)
    record = {"rows": [[row, run["config"]["seed"]] for row, run in samples["rows"]],
              "labels": samples["labels"].tolist(), "latent_seed": seed, "missing": samples["missing"],
              "curves": names, "panels": {title: list(groups) for title, groups in panels.items()}}
    plt = pyplot()
    count = len(samples["rows"])
    height = 0.8 * count + 5.1
    width = max(10.0, 5.0 * len(panels))  # room for each panel's legend
    figure = plt.figure(figsize=(width, height), dpi=110)
    # an empty row between the samples and the curves keeps the curves' title off the last sample row
    grid = figure.add_gridspec(count + 2, 1, height_ratios=[0.8] * count + [0.5, 3.8], hspace=0.15)
    for i, ((row, run), images) in enumerate(zip(samples["rows"], samples["images"])):
        axes = figure.add_subplot(grid[i])
        strip, options = _strip(images)
        axes.imshow(strip, interpolation="nearest", **options)
        axes.set_xticks([])
        axes.set_yticks([])
        axes.set_ylabel(f"{row_name(row, run)}\nseed {run['config']['seed']}", rotation=0, ha="right", va="center",
                        fontsize=8)
        if i == 0:
            axes.set_title(f"best EMA generator, lowest seed; latent seed {seed}, classes "
                           f"{', '.join(map(str, record['labels']))} (one per column, the same in every row)", fontsize=9)
    if names:
        below = grid[count + 1].subgridspec(1, len(panels), wspace=0.08)
        first = figure.add_subplot(below[0])
        axes_row = [first] + [figure.add_subplot(below[i], sharey=first) for i in range(1, len(panels))]
        draw_panels(axes_row, panels, ylabel=f"{CURVE_LABEL}\nmean over seeds, min–max band")
    else:
        axes = figure.add_subplot(grid[count + 1])
        axes.text(0.5, 0.5, f"no run logged {CURVE}", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
    figure.subplots_adjust(left=2.0 / width, right=1 - 0.2 / width, top=1 - 0.4 / height, bottom=0.6 / height)
    save_figure(figure, path, Description=json.dumps(record))
    return record
