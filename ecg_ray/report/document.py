"""The Markdown page being built: blocks of text, paths relative to the scanned directory, images."""

from __future__ import annotations

from pathlib import Path

from ecg_ray.report.plots import Plots
from ecg_ray.report.scan import Artefacts


class Report:
    def __init__(self, directory: Path, plots: Plots, found: Artefacts):
        self.directory = directory
        self.plots = plots
        self.found = found
        self.lines: list[str] = []

    def add(self, *blocks: str) -> None:
        for block in blocks:
            self.lines.append(block)
            self.lines.append("")

    def rel(self, path: Path | str) -> str:
        try:
            return str(Path(path).relative_to(self.directory)) or "."
        except ValueError:
            return str(path)

    def image(self, name: str, title: str) -> None:
        self.add(f"![{title}]({name})")
