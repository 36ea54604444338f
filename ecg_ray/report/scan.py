"""Finding and loading the report's artefacts: sweep and robustness tables, evaluation summaries
and pretraining histories. Every file is read on its own; one that fails lands in ``skipped``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ecg_ray.report.formatting import finite, reason
from ecg_ray.run_layout import EVALUATION_FILE, HISTORY_FILE, RUN_CONFIG, committed_checkpoint_name

RESULTS_NAMES = ("results.parquet", "results.csv")
ROBUSTNESS_NAMES = ("robustness.parquet", "robustness.csv")


@dataclass
class Table:
    path: Path
    frame: pd.DataFrame


@dataclass
class Evaluation:
    path: Path
    data: dict[str, Any]
    label_fraction: float | None


@dataclass
class PretrainRun:
    run_dir: Path
    checkpoint: Path
    history: list[dict[str, Any]]
    method: str | None
    encoder: str | None


@dataclass
class Artefacts:
    results: list[Table] = field(default_factory=list)
    robustness: list[Table] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    pretraining: list[PretrainRun] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def method_names(self) -> dict[str, str]:
        """How each method is named in tables, from the evaluations that recorded it (``method_display``)."""
        return method_names(self.evaluations)

    def empty(self) -> bool:
        return not (self.results or self.robustness or self.evaluations or self.pretraining)


def method_names(evaluations: list[Evaluation]) -> dict[str, str]:
    """Method name -> display name, as evaluation summaries record it (written from the method registry)."""
    names = {}
    for e in evaluations:
        method, display = e.data.get("method"), e.data.get("method_display")
        if isinstance(method, str) and isinstance(display, str) and display:
            names[method] = display
    return names


def _read_table(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if frame.empty:
        raise ValueError("table has no rows")
    return frame


def _numeric(frame: pd.DataFrame, columns) -> pd.DataFrame:
    for column in columns:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def load_results(path: Path) -> Table:
    frame = _read_table(path)
    if "test_macro_auc" not in frame.columns:
        raise ValueError(f"no test_macro_auc column (columns: {', '.join(map(str, frame.columns[:12]))})")
    frame = _numeric(frame, ["test_macro_auc", "val_macro_auc", "test_macro_auc_ci_low", "test_macro_auc_ci_high",
                             "labels_scored", "best_epoch", "data.label_fraction"])
    if "variant" not in frame.columns:
        frame["variant"] = _derived_variants(frame)
    frame["variant"] = frame["variant"].fillna("(unnamed)").astype(str)
    return Table(path, frame)


def _derived_variants(frame: pd.DataFrame) -> pd.Series:
    """A variant name from the method and evaluation mode when the table has no ``variant`` column."""
    mode = frame["eval.mode"].astype(str) if "eval.mode" in frame.columns else pd.Series("", index=frame.index)
    method = frame["method.name"].astype(str) if "method.name" in frame.columns else pd.Series("", index=frame.index)
    names = [m if m == "supervised" else f"{me} {m}".strip() for me, m in zip(method, mode, strict=True)]
    return pd.Series([n or "(unnamed)" for n in names], index=frame.index)


def load_robustness(path: Path) -> Table:
    frame = _read_table(path)
    missing = [c for c in ("noise_type", "test_macro_auc") if c not in frame.columns]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    if "snr_db" not in frame.columns:
        frame["snr_db"] = np.nan
    frame = _numeric(frame, ["test_macro_auc", "snr_db"])
    frame["variant"] = (frame["variant"] if "variant" in frame.columns else pd.Series(np.nan, index=frame.index))
    frame["variant"] = frame["variant"].fillna("(unnamed)").astype(str)
    frame["noise_type"] = frame["noise_type"].fillna("none").astype(str)
    return Table(path, frame)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _label_fraction(path: Path, data: dict[str, Any]) -> float | None:
    """The label fraction of an evaluation: from the summary if present, else its run's saved config."""
    if data.get("label_fraction") is not None:
        return float(data["label_fraction"])
    config_path = path.parent / RUN_CONFIG
    if config_path.exists():
        try:
            config = yaml.safe_load(config_path.read_text()) or {}
            value = (config.get("data") or {}).get("label_fraction")
            return None if value is None else float(value)
        except Exception:  # a broken config only costs the fraction, the summary is still valid
            return None
    return None


def load_evaluation(path: Path) -> Evaluation:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if not finite(data.get("test_macro_auc")):
        raise ValueError("no numeric test_macro_auc")
    return Evaluation(path, data, _label_fraction(path, data))


def _load_history(path: Path) -> list[dict[str, Any]]:
    history = _read_json(path)
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ValueError("expected a JSON list of per-epoch objects")
    if not history:
        raise ValueError("empty history")
    if not any(finite(h.get("loss")) for h in history):
        raise ValueError("no epoch has a numeric loss")
    return history


def _load_pretraining(run_dir: Path, histories: list[Path], skipped: list[tuple[Path, str]]) -> PretrainRun | None:
    loaded = []
    for path in histories:
        try:
            loaded.append((len(h := _load_history(path)), path.parent.name, path, h))
        except Exception as exc:
            skipped.append((path, reason(exc)))
    if not loaded:
        return None
    # Ray's committed checkpoint if known, else the longest history (as checkpoint.latest_checkpoint).
    committed = committed_checkpoint_name(run_dir)
    _, _, path, history = max(loaded, key=lambda item: (item[1] == committed, item[0], item[1]))
    method = encoder = None
    config_path = run_dir / RUN_CONFIG
    if config_path.exists():
        try:
            config = yaml.safe_load(config_path.read_text()) or {}
            method = (config.get("method") or {}).get("name")
            encoder = (config.get("model") or {}).get("encoder")
        except Exception as exc:
            skipped.append((config_path, f"{reason(exc)} (run still plotted, method unknown)"))
    return PretrainRun(run_dir, path.parent, history, method, encoder)


def scan(directory: Path) -> Artefacts:
    """Find and load every known artefact under ``directory``; unreadable ones go to ``skipped``."""
    directory = Path(directory)
    found = Artefacts()
    histories: dict[Path, list[Path]] = {}
    evaluation_dirs: set[Path] = set()
    for root, dirnames, filenames in os.walk(directory):
        # Hidden folders (.git, .venv, Ray's .tmp) never hold our artefacts and can be huge.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        root_path, names = Path(root), set(filenames)
        for group, loader, target in ((RESULTS_NAMES, load_results, found.results),
                                      (ROBUSTNESS_NAMES, load_robustness, found.robustness)):
            present = [n for n in group if n in names]
            for i, name in enumerate(present):
                if i > 0:  # the Parquet table and its CSV copy are the same results: count them once
                    found.skipped.append((root_path / name, f"duplicate of {present[0]} in the same folder"))
                    continue
                try:
                    target.append(loader(root_path / name))
                except Exception as exc:
                    found.skipped.append((root_path / name, reason(exc)))
        if EVALUATION_FILE in names and root_path.name.startswith("checkpoint_") and \
                (root_path.parent / EVALUATION_FILE).exists():
            continue  # the checkpoint's copy of the run directory's summary: count the run once
        if EVALUATION_FILE in names:
            evaluation_dirs.add(root_path)
            try:
                found.evaluations.append(load_evaluation(root_path / EVALUATION_FILE))
            except Exception as exc:
                found.skipped.append((root_path / EVALUATION_FILE, reason(exc)))
        if HISTORY_FILE in names and root_path.name.startswith("checkpoint_"):
            histories.setdefault(root_path.parent, []).append(root_path / HISTORY_FILE)
    for run_dir, paths in sorted(histories.items()):
        # Downstream (evaluate) runs checkpoint the same way; their result is the evaluation summary.
        if run_dir in evaluation_dirs:
            continue
        run = _load_pretraining(run_dir, paths, found.skipped)
        if run is not None:
            found.pretraining.append(run)
    return found
