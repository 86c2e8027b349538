"""PNG figures of training curves (matplotlib, the ``plots`` extra: ``pip install -e '.[plots]'``)."""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kd_core.runtime.io import write_bytes

Curve = Sequence[tuple[int, float]]


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise PlotsUnavailable("plots need matplotlib: pip install -e '.[plots]' (make install does)") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mean_band(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps common to every curve, and the mean, min and max over curves at each of them."""
    common = sorted(set.intersection(*(set(step for step, _ in curve) for curve in curves)))
    values = np.array([[dict(curve)[step] for step in common] for curve in curves], dtype=np.float64)
    return np.array(common), values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def draw_curves(axes, groups: Mapping[str, Sequence[Curve]], *, ylabel: str, title: str = "",
                xlabel: str = "iteration", colours: Mapping[str, str] | None = None) -> None:
    """On ``axes``: one line per group (the mean of its curves at their common steps) with a min–max band when
    n > 1; ``colours``: group -> colour (default: matplotlib's cycle)."""
    for label, curves in groups.items():
        curves = [curve for curve in curves if curve]
        if not curves:
            continue
        steps, mean, low, high = mean_band(curves)
        line, = axes.plot(steps, mean, marker="o", markersize=2.5, linewidth=1.4, color=(colours or {}).get(label),
                          label=f"{label} (n={len(curves)})" if len(curves) > 1 else label)
        if len(curves) > 1:
            axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)


def save_figure(figure, path: str | Path, **metadata: str) -> Path:
    """Write a matplotlib figure as a PNG (atomically; ``metadata``: PNG text chunks) and close it."""
    plt = pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata=metadata or None)
    plt.close(figure)
    return write_bytes(path, buffer.getvalue())


def colour_map(labels: Sequence[str]) -> dict[str, str]:
    """One fixed colour per label (tab10, then tab20's light shades), so a label keeps its colour across panels."""
    from matplotlib import colormaps

    palette = [colormaps["tab10"](i) for i in range(10)] + [colormaps["tab20"](2 * i + 1) for i in range(10)]
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def draw_panels(axes_row: Sequence, panels: Mapping[str, Mapping[str, Sequence[Curve]]], *, ylabel: str,
                xlabel: str = "iteration") -> None:
    """:func:`draw_curves` of each panel (title -> groups) on one axes of ``axes_row``, one colour per group
    throughout; the y label on the first only."""
    colours = colour_map(list(dict.fromkeys(label for groups in panels.values() for label in groups)))
    for i, (axes, (name, groups)) in enumerate(zip(axes_row, panels.items())):
        draw_curves(axes, groups, ylabel=ylabel if i == 0 else "", title=name, xlabel=xlabel, colours=colours)


def panels_plot(panels: Mapping[str, Mapping[str, Sequence[Curve]]], path: str | Path, *, ylabel: str, title: str = "",
                xlabel: str = "iteration") -> Path:
    """:func:`draw_panels` side by side on one shared y axis, in a figure of its own written to ``path``."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), dpi=110, sharey=True, squeeze=False)
    draw_panels(axes[0], panels, ylabel=ylabel, xlabel=xlabel)
    if title:
        figure.suptitle(title, fontsize=10.5)
    figure.tight_layout()
    return save_figure(figure, path)


def curve_plot(groups: Mapping[str, Sequence[Curve]], path: str | Path, *, ylabel: str, title: str = "",
               xlabel: str = "iteration") -> Path:
    """:func:`draw_curves` on a figure of its own, written to ``path``."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    draw_curves(axes, groups, ylabel=ylabel, title=title, xlabel=xlabel)
    figure.tight_layout()
    return save_figure(figure, path)


def samples_and_curves(grids: Mapping[str, np.ndarray], panels: Mapping[str, Mapping[str, Curve]], path: str | Path,
                       *, titles: Mapping[str, str] | None = None, row_labels: Sequence[str] = (),
                       marks: Mapping[str, int] | None = None, ylabel: str = "", title: str = "",
                       xlabel: str = "iteration") -> Path:
    """Sample grids side by side above curve panels, one colour per run throughout.

    ``grids``: run label -> a tiled grid of its samples, uint8 ``(H, W, 3)``, shown as it is (so colour on
    grayscale data shows), under ``titles[label]`` (default: the label); ``row_labels`` name the grid's rows
    (e.g. the classes). ``panels``: panel title -> {run label: curve}, one panel each below the grids, sharing
    ``ylabel``; ``marks``: run label -> the iteration starred on its curves (the checkpoint the grid shows).
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    colours = dict(zip(grids, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    marks = marks or {}
    columns = max(len(grids), len(panels))
    figure = plt.figure(figsize=(4.8 * columns, 9.4), dpi=110, layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=(1.5, 1))
    for axes, (label, grid) in zip(np.atleast_1d(top.subplots(1, len(grids))), grids.items()):
        axes.imshow(grid, interpolation="nearest")
        axes.set_title((titles or {}).get(label, label), fontsize=9.5, color=colours[label])
        axes.set_xticks([])
        step = grid.shape[0] / max(len(row_labels), 1)
        axes.set_yticks([step * (i + 0.5) for i in range(len(row_labels))], list(row_labels), fontsize=7.5)
        axes.tick_params(length=0)
    for axes, (name, curves) in zip(np.atleast_1d(bottom.subplots(1, len(panels))), panels.items()):
        for label, curve in curves.items():
            if not curve:
                continue
            steps, values = zip(*curve)
            axes.plot(steps, values, marker="o", markersize=2.5, linewidth=1.4, label=label, color=colours.get(label))
            marked = dict(curve).get(marks.get(label))
            if marked is not None:
                axes.plot([marks[label]], [marked], marker="*", markersize=12, color=colours.get(label), linestyle="")
        axes.set_title(name, fontsize=9.5)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10.5)
    return save_figure(figure, path)
