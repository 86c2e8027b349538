"""gan_kd.plots: the figures are written as PNGs, and a missing matplotlib is one PlotsUnavailable."""
from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_kd import plots


def test_samples_and_curves_puts_the_grids_above_one_panel_per_curve_family(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    grids = {run: rng.integers(0, 256, size=(68, 34, 3), dtype=np.uint8) for run in ("da", "vkd-whiten")}
    panels = {"label-free FD ↓": {"da": [(100, 8.0), (200, 6.0)], "vkd-whiten": [(100, 7.0), (200, 5.0)]},
              "classifier FD ↓": {"da": [(100, 20.0), (200, 18.0)], "vkd-whiten": []}}  # an empty curve is left out
    path = plots.samples_and_curves(grids, panels, tmp_path / "demo.png", titles={"da": "DA"}, row_labels=["a", "b"],
                                    marks={"da": 200, "vkd-whiten": 300}, ylabel="FD", title="t")
    image = Image.open(path)
    assert path == tmp_path / "demo.png" and image.format == "PNG" and image.size == (1056, 1034)


def test_panels_plot_keeps_one_colour_per_curve_across_panels(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib import pyplot

    drawn = []
    real = pyplot.Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append((self.get_title(), kwargs.get("label"), kwargs.get("color")))
        return real(self, *args, **kwargs)

    panels = {"left": {"da": [[(1, 3.0), (2, 2.0)], [(1, 4.0), (2, 2.5)]], "vkd": [[(1, 2.0), (2, 1.0)]]},
              "right": {"da": [[(1, 3.0), (2, 2.0)]], "pkd": [[(1, 5.0), (2, 4.0)]]}}
    pyplot.Axes.plot = spy
    try:
        path = plots.panels_plot(panels, tmp_path / "p.png", ylabel="FD", title="t")
    finally:
        pyplot.Axes.plot = real
    assert Image.open(path).format == "PNG"
    colours = {}
    for _, label, colour in drawn:
        colours.setdefault(label.split(" (n=")[0], set()).add(tuple(colour))
    assert set(colours) == {"da", "vkd", "pkd"} and all(len(c) == 1 for c in colours.values())  # da: one colour
    assert len({next(iter(c)) for c in colours.values()}) == 3  # three curves, three colours


def test_plots_without_matplotlib_raise_plots_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(plots.PlotsUnavailable, match="pip install"):
        plots.samples_and_curves({"da": np.zeros((4, 4, 3), np.uint8)}, {"FD": {"da": [(1, 1.0)]}}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
