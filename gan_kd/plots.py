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
                xlabel: str = "iteration") -> None:
    """On ``axes``: one line per group (the mean of its curves at their common steps) with a min–max band when n > 1."""
    for label, curves in groups.items():
        curves = [curve for curve in curves if curve]
        if not curves:
            continue
        steps, mean, low, high = mean_band(curves)
        line, = axes.plot(steps, mean, marker="o", markersize=2.5, linewidth=1.4,
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


def curve_plot(groups: Mapping[str, Sequence[Curve]], path: str | Path, *, ylabel: str, title: str = "",
               xlabel: str = "iteration") -> Path:
    """:func:`draw_curves` on a figure of its own, written to ``path``."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    draw_curves(axes, groups, ylabel=ylabel, title=title, xlabel=xlabel)
    figure.tight_layout()
    return save_figure(figure, path)
