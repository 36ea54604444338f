"""Figures on a private Agg canvas and the bookkeeping of the PNG files written beside the report.

matplotlib's object API is used instead of pyplot, so no global backend is switched: it works
headless and inside processes that already use another backend; without matplotlib ``figure``
returns None and the sections write their tables only.
"""

from __future__ import annotations

from pathlib import Path

from ecg_ray.report.scan import Artefacts


def new_figure(width: float, height: float):
    """A Figure on an Agg canvas, independent of pyplot's global state; None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


class Plots:
    """Saves figures into the report folder under unique names and remembers them for the index."""

    def __init__(self, folder: Path, colors: dict[str, str]):
        self.folder = folder
        self.colors = colors
        self.written: list[tuple[str, str]] = []  # (file name, title)
        self.unavailable = False

    def figure(self, width: float, height: float):
        figure = new_figure(width, height)
        self.unavailable |= figure is None
        return figure

    def unique_name(self, stem: str) -> str:
        used = {name for name, _ in self.written}
        name, i = f"{stem}.png", 2
        while name in used:
            name, i = f"{stem}_{i}.png", i + 1
        return name

    def save(self, figure, stem: str, title: str) -> str:
        name = self.unique_name(stem)
        figure.savefig(self.folder / name)
        self.written.append((name, title))
        return name

    def color(self, variant: str) -> str:
        return self.colors.get(variant, "0.3")


def variant_colors(found: Artefacts) -> dict[str, str]:
    """One colour per variant across every plot, so a variant looks the same in all figures."""
    names = sorted({v for t in found.results + found.robustness for v in t.frame["variant"].unique()})
    palette = [f"C{i}" for i in range(10)]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}
