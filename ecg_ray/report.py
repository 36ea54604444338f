"""Markdown report with PNG plots from whatever result artefacts a directory holds.

``write_report(directory)`` walks ``directory`` once and picks up, wherever they are:

- sweep results tables ``results.parquet`` / ``results.csv`` (one row per Tune trial, dotted
  config keys, ``variant`` and the test/validation metrics),
- robustness tables ``robustness.parquet`` / ``robustness.csv`` (one row per trial, noise type
  and SNR; the clean reference has noise type ``none``),
- evaluation summaries ``evaluation.json`` (one per ``ecg-ray evaluate`` run),
- pretraining histories ``checkpoint_*/history.json`` (the longest history per run directory).

It writes ``report.md`` (default ``directory/report/report.md``) and the plots beside it. Every
artefact is optional and read independently: a file that cannot be read or does not have the
expected shape is listed under "Skipped" with the reason, so one bad file never hides the rest.
Plots use matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so it
works headless and inside processes that already use another backend; without matplotlib the
tables are still written.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

RESULTS_NAMES = ("results.parquet", "results.csv")
ROBUSTNESS_NAMES = ("robustness.parquet", "robustness.csv")
EVALUATION_FILE = "evaluation.json"
# Same names as ecg_ray.train.checkpoint.HISTORY_FILE and ecg_ray.train.trainer.RUN_CONFIG (a test
# checks it); not imported because those modules pull in torch and the data store, and a report
# must be cheap to build on a laptop that only has the result files.
HISTORY_FILE = "history.json"
RUN_CONFIG = "ecg_ray_config.yaml"
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"

# Published PTB-XL "all" (71 statements) test macro AUC, mean and std over runs, from Mehari &
# Strodthoff (2022), "Self-supervised representation learning from 12-lead ECG data", Computers in
# Biology and Medicine 141:105114; numbers as collected in ../shared/reference/paper-protocol.md.
# Keyed by (our encoder name, pretraining method or None for no pretraining): the "none" row holds
# supervised training in the fine-tune column and a linear head on a random encoder in the linear one.
PUBLISHED: dict[tuple[str, str | None], dict[str, Any]] = {
    ("xresnet1d50", None): {"finetune": (0.924, 0.005), "linear": (0.721, 0.016)},
    ("xresnet1d50", "simclr"): {"finetune": (0.927, 0.003), "linear": (0.883, 0.003)},
    ("xresnet1d50", "byol"): {"finetune": (0.929, 0.002), "linear": (0.878, 0.002)},
    ("cpc_4fc2lstm", None): {"finetune": (0.932, 0.003), "linear": (0.711, 0.007)},
    ("cpc_4fc2lstm", "cpc"): {"finetune": (0.942, 0.001), "linear": (0.927, 0.001), "note": "CPC on CinC2020"},
}
PUBLISHED_MODEL_NAMES = {"xresnet1d50": "xresnet1d50", "cpc_4fc2lstm": "4FC+2LSTM+2FC"}
METHOD_NAMES = {"simclr": "SimCLR", "byol": "BYOL", "swav": "SwAV", "cpc": "CPC"}
NO_PRETRAINING = "none (supervised / random init)"

# Trial states whose metrics are not final results (Ray Tune's names).
UNFINISHED_STATUS = {"ERROR", "PENDING", "RUNNING", "PAUSED"}
# Dotted config keys that can differ between repeats of one setting without being hyperparameters to
# select over: paths (each seed may pretrain its own encoder file); keys ending in "seed" are repeats too.
NOT_HYPERPARAMETERS = {"data.store", "data.stores", "eval.pretrained", "eval.encoder", "eval.variant"}
MAX_TRIAL_ROWS = 200


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

    def empty(self) -> bool:
        return not (self.results or self.robustness or self.evaluations or self.pretraining)


# --------------------------------------------------------------------------------------------- scanning


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 240 else text[:237] + "..."


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


def _load_results(path: Path) -> Table:
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


def _load_robustness(path: Path) -> Table:
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


def _load_evaluation(path: Path) -> Evaluation:
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    if not _finite(data.get("test_macro_auc")):
        raise ValueError("no numeric test_macro_auc")
    return Evaluation(path, data, _label_fraction(path, data))


def _load_history(path: Path) -> list[dict[str, Any]]:
    history = _read_json(path)
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ValueError("expected a JSON list of per-epoch objects")
    if not history:
        raise ValueError("empty history")
    if not any(_finite(h.get("loss")) for h in history):
        raise ValueError("no epoch has a numeric loss")
    return history


def _committed_checkpoint(run_dir: Path) -> str | None:
    """The checkpoint Ray Train committed last (see checkpoint.committed_checkpoint_name)."""
    try:
        return str(json.loads((run_dir / RAY_SNAPSHOT).read_text())["latest_checkpoint_result"]["checkpoint_dir_name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_pretraining(run_dir: Path, histories: list[Path], skipped: list[tuple[Path, str]]) -> PretrainRun | None:
    loaded = []
    for path in histories:
        try:
            loaded.append((len(h := _load_history(path)), path.parent.name, path, h))
        except Exception as exc:
            skipped.append((path, _reason(exc)))
    if not loaded:
        return None
    # Ray's committed checkpoint if known, else the longest history (as checkpoint.latest_checkpoint).
    committed = _committed_checkpoint(run_dir)
    _, _, path, history = max(loaded, key=lambda item: (item[1] == committed, item[0], item[1]))
    method = encoder = None
    config_path = run_dir / RUN_CONFIG
    if config_path.exists():
        try:
            config = yaml.safe_load(config_path.read_text()) or {}
            method = (config.get("method") or {}).get("name")
            encoder = (config.get("model") or {}).get("encoder")
        except Exception as exc:
            skipped.append((config_path, f"{_reason(exc)} (run still plotted, method unknown)"))
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
        for group, loader, target in ((RESULTS_NAMES, _load_results, found.results),
                                      (ROBUSTNESS_NAMES, _load_robustness, found.robustness)):
            present = [n for n in group if n in names]
            for i, name in enumerate(present):
                if i > 0:  # the Parquet table and its CSV copy are the same results: count them once
                    found.skipped.append((root_path / name, f"duplicate of {present[0]} in the same folder"))
                    continue
                try:
                    target.append(loader(root_path / name))
                except Exception as exc:
                    found.skipped.append((root_path / name, _reason(exc)))
        if EVALUATION_FILE in names and root_path.name.startswith("checkpoint_") and \
                (root_path.parent / EVALUATION_FILE).exists():
            continue  # the checkpoint's copy of the run directory's summary: count the run once
        if EVALUATION_FILE in names:
            evaluation_dirs.add(root_path)
            try:
                found.evaluations.append(_load_evaluation(root_path / EVALUATION_FILE))
            except Exception as exc:
                found.skipped.append((root_path / EVALUATION_FILE, _reason(exc)))
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


# --------------------------------------------------------------------------------------------- formatting


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_auc(value: Any) -> str:
    return f"{float(value):.3f}" if _finite(value) else "—"


def fmt_auc_ci(value: Any, low: Any = None, high: Any = None) -> str:
    """``0.912 [0.901, 0.923]``; the interval is left out when it is not known."""
    if not _finite(value):
        return "—"
    if _finite(low) and _finite(high):
        return f"{float(value):.3f} [{float(low):.3f}, {float(high):.3f}]"
    return f"{float(value):.3f}"


def fmt_mean_std(values: list[float]) -> str:
    values = [float(v) for v in values if _finite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} (n={len(values)})"


def fmt_fraction(value: float) -> str:
    return f"{float(value) * 100:g}%" if _finite(value) else "—"


def fmt_snr(value: float) -> str:
    return f"{float(value):g} dB"


def _cell(value: Any) -> str:
    text = "—" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _key_text(value: Any) -> str:
    """A hashable, readable form of a config value (lists and arrays from Parquet included)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_key_text(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


# --------------------------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float):
    """A Figure on an Agg canvas, independent of pyplot's global state; None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


class _Plots:
    """Saves figures into the report folder under unique names and remembers them for the index."""

    def __init__(self, folder: Path, colors: dict[str, str]):
        self.folder = folder
        self.colors = colors
        self.written: list[tuple[str, str]] = []  # (file name, title)
        self.unavailable = False

    def figure(self, width: float, height: float):
        figure = _new_figure(width, height)
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


def _variant_colors(found: Artefacts) -> dict[str, str]:
    """One colour per variant across every plot, so a variant looks the same in all figures."""
    names = sorted({v for t in found.results + found.robustness for v in t.frame["variant"].unique()})
    palette = [f"C{i}" for i in range(10)]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


# --------------------------------------------------------------------------------------------- sections


class _Report:
    def __init__(self, directory: Path, plots: _Plots, found: Artefacts):
        self.directory = directory
        self.plots = plots
        self.found = found
        self.lines: list[str] = []

    def add(self, *blocks: str) -> None:
        for block in blocks:
            self.lines.append(block)
            self.lines.append("")

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.directory)) or "."
        except ValueError:
            return str(path)

    def image(self, name: str, title: str) -> None:
        self.add(f"![{title}]({name})")


def _trial_status_ok(frame: pd.DataFrame) -> pd.Series:
    if "status" not in frame.columns:
        return pd.Series(True, index=frame.index)
    return ~frame["status"].astype(str).str.upper().isin(UNFINISHED_STATUS)


def _hyperparameter_columns(frame: pd.DataFrame) -> list[str]:
    """Dotted config keys that vary within one (variant, label fraction) and are not a path or a seed.

    Keys that only differ between variants (method, encoder, mode) describe the variant itself.
    """
    fraction = frame["data.label_fraction"] if "data.label_fraction" in frame.columns else 0.0
    group = frame.assign(_fraction=fraction).fillna({"_fraction": -1.0}).groupby(["variant", "_fraction"]).ngroup()
    columns = []
    for column in frame.columns:
        column = str(column)
        if "." not in column or column == "data.label_fraction" or column in NOT_HYPERPARAMETERS:
            continue
        if column.endswith("seed"):
            continue
        text = frame[column].map(_key_text)
        if (text.groupby(group).nunique() > 1).any():
            columns.append(column)
    return columns


@dataclass
class _Cell:
    variant: str
    fraction: float
    rows: pd.DataFrame
    selected: str
    pooled_without_validation: bool = False

    @property
    def test(self) -> list[float]:
        return self.rows["test_macro_auc"].tolist()

    @property
    def mean(self) -> float:
        return float(np.mean(self.test))

    def text(self) -> str:
        if len(self.rows) == 1:
            row = self.rows.iloc[0]
            return fmt_auc_ci(row["test_macro_auc"], row.get("test_macro_auc_ci_low"),
                              row.get("test_macro_auc_ci_high"))
        return fmt_mean_std(self.test)

    def error(self) -> tuple[float, float] | None:
        """Error bar (below, above) for the plot: std over repeats, else the single run's CI."""
        if len(self.rows) > 1:
            std = float(np.std(self.test, ddof=1))
            return std, std
        row = self.rows.iloc[0]
        low, high = row.get("test_macro_auc_ci_low"), row.get("test_macro_auc_ci_high")
        if _finite(low) and _finite(high):
            return max(0.0, self.mean - float(low)), max(0.0, float(high) - self.mean)
        return None


def _select_cells(frame: pd.DataFrame, hyper: list[str]) -> list[_Cell]:
    """Per (variant, label fraction): the hyperparameters with the best mean validation AUC, averaged
    over repeats (seeds). Choosing on validation, never on test, keeps the test numbers honest."""
    cells = []
    fraction = frame["data.label_fraction"] if "data.label_fraction" in frame.columns else pd.Series(
        np.nan, index=frame.index)
    frame = frame.assign(_fraction=fraction.fillna(-1.0))
    frame["_hyper"] = (frame[hyper].apply(lambda r: ", ".join(f"{c}={_key_text(r[c])}" for c in hyper), axis=1)
                       if hyper else "")
    for (variant, frac), group in frame.groupby(["variant", "_fraction"], sort=True):
        subgroups = list(group.groupby("_hyper", sort=True))
        pooled = False
        if len(subgroups) == 1:
            selected, rows = subgroups[0]
        else:
            val = {key: sub["val_macro_auc"].mean() if "val_macro_auc" in sub.columns else np.nan
                   for key, sub in subgroups}
            if any(_finite(v) for v in val.values()):
                selected = max(val, key=lambda k: val[k] if _finite(val[k]) else -math.inf)
                rows = group[group["_hyper"] == selected]
            else:
                selected, rows, pooled = "all trials (no validation AUC to select on)", group, True
        cells.append(_Cell(str(variant), float(frac) if frac >= 0 else float("nan"), rows, selected, pooled))
    return cells


def _results_section(report: _Report, table: Table, index: int) -> None:
    frame = table.frame
    title = f"Sweep results: `{report.rel(table.path)}`"
    report.add(f"### {title}")
    status = ""
    if "status" in frame.columns:
        counts = frame["status"].astype(str).value_counts()
        status = " Trial status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "."
    usable = frame[_trial_status_ok(frame) & frame["test_macro_auc"].map(_finite)]
    report.add(f"{len(frame)} trial(s), {len(usable)} with a test macro AUC.{status}")
    if usable.empty:
        report.add("No finished trial with a test macro AUC; nothing to tabulate.")
        return
    hyper = _hyperparameter_columns(usable)
    cells = _select_cells(usable, hyper)
    fractions = sorted({c.fraction for c in cells if _finite(c.fraction)})
    variants = sorted({c.variant for c in cells})
    by_key = {(c.variant, c.fraction if _finite(c.fraction) else None): c for c in cells}
    has_fraction = bool(fractions)
    columns = fractions if has_fraction else [None]
    header = ["variant"] + ([f"{fmt_fraction(f)} labels" for f in fractions] if has_fraction else ["test macro AUC"])
    rows = []
    for variant in variants:
        rows.append([variant] + [by_key[(variant, f)].text() if (variant, f) in by_key else "—" for f in columns])
    report.add("Test macro AUC [95% bootstrap CI] per variant"
               + (" and label fraction" if has_fraction else "")
               + "; mean ± std (n) where a cell has repeated runs.", md_table(header, rows))
    if hyper:
        report.add(f"Hyperparameters varied in this sweep: {', '.join(f'`{h}`' for h in hyper)}. Each cell uses "
                   "the setting with the best mean validation macro AUC (selected on validation, not test):")
        sel_rows = [[c.variant, fmt_fraction(c.fraction), c.selected, fmt_auc(c.rows["val_macro_auc"].mean())
                     if "val_macro_auc" in c.rows.columns else "—", len(c.rows)] for c in cells]
        report.add(md_table(["variant", "label fraction", "selected", "val macro AUC", "runs"], sel_rows))
    # The per-trial table is long for real sweeps, so it is folded away (GitHub renders <details>).
    detail_cols = [c for c in ("eval.mode", "method.name", "model.encoder") if c in usable.columns] + hyper
    ordered = usable.assign(_f=usable.get("data.label_fraction", np.nan),
                            _v=-usable.get("val_macro_auc", pd.Series(np.nan, index=usable.index)))
    ordered = ordered.sort_values(["variant", "_f", "_v"], na_position="last")
    trial_rows = []
    for _, row in ordered.head(MAX_TRIAL_ROWS).iterrows():
        trial_rows.append([row["variant"], fmt_fraction(row.get("data.label_fraction", np.nan))]
                          + [_key_text(row[c]) for c in detail_cols]
                          + [fmt_auc(row.get("val_macro_auc")),
                             fmt_auc_ci(row["test_macro_auc"], row.get("test_macro_auc_ci_low"),
                                        row.get("test_macro_auc_ci_high")),
                             _key_text(row.get("labels_scored")), _key_text(row.get("best_epoch")),
                             _key_text(row.get("trial_id"))])
    more = f" (first {MAX_TRIAL_ROWS} of {len(ordered)})" if len(ordered) > MAX_TRIAL_ROWS else ""
    report.add(f"<details><summary>All finished trials{more}</summary>",
               md_table(["variant", "label fraction"] + detail_cols
                        + ["val AUC", "test AUC [CI]", "labels", "best epoch", "trial"], trial_rows),
               "</details>")
    if len(fractions) >= 2:
        name = _label_efficiency_plot(report.plots, cells, variants, fractions, index)
        if name:
            report.image(name, "Label efficiency")


def _label_efficiency_plot(plots: _Plots, cells: list[_Cell], variants: list[str], fractions: list[float],
                           index: int) -> str | None:
    figure = plots.figure(6.4, 4.2)
    if figure is None:
        return None
    ax = figure.add_subplot()
    for variant in variants:
        points = sorted((c for c in cells if c.variant == variant and _finite(c.fraction)), key=lambda c: c.fraction)
        if not points:
            continue
        x = [c.fraction * 100 for c in points]
        y = [c.mean for c in points]
        errors = [c.error() or (0.0, 0.0) for c in points]
        ax.errorbar(x, y, yerr=np.array(errors).T, marker="o", capsize=3, label=variant, color=plots.color(variant))
    ax.set_xscale("log")
    ticks = [f * 100 for f in fractions]
    ax.set_xticks(ticks, [fmt_fraction(f) for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("labelled training data")
    ax.set_ylabel("test macro AUC")
    ax.set_title("Label efficiency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return plots.save(figure, "label_efficiency" if index == 0 else f"label_efficiency_{index + 1}",
                      "Label efficiency")


def _is_clean(frame: pd.DataFrame) -> pd.Series:
    noise = frame["noise_type"].str.lower()
    return noise.isin(["none", "clean", ""]) | ~frame["snr_db"].map(_finite)


def _robustness_section(report: _Report, table: Table, index: int) -> None:
    frame = table.frame[table.frame["test_macro_auc"].map(_finite)]
    report.add(f"### Robustness: `{report.rel(table.path)}`")
    if frame.empty:
        report.add("No row has a test macro AUC.")
        return
    clean_mask = _is_clean(frame)
    clean = frame[clean_mask].groupby("variant")["test_macro_auc"].mean()
    noisy = frame[~clean_mask]
    curves = noisy.groupby(["variant", "noise_type", "snr_db"])["test_macro_auc"].agg(["mean", "count"])
    snrs = sorted(noisy["snr_db"].unique())
    variants = sorted(frame["variant"].unique())
    types = sorted(noisy["noise_type"].unique())
    repeats = frame.groupby("variant")["trial_id"].nunique().max() if "trial_id" in frame.columns else 1
    report.add(f"{len(frame)} row(s): {len(variants)} variant(s), noise types {', '.join(types) or 'none'}"
               + ("; a variant with several trials shows their mean" if repeats > 1 else "") + ".")
    rows = []
    for variant in variants:
        for noise in types or ["none"]:
            row = [variant, noise, fmt_auc(clean.get(variant))]
            for snr in snrs:
                key = (variant, noise, snr)
                row.append(fmt_auc(curves.loc[key, "mean"]) if key in curves.index else "—")
            rows.append(row)
    report.add("Test macro AUC under seeded test-time noise at each SNR (lower SNR = more noise):",
               md_table(["variant", "noise", "clean"] + [fmt_snr(s) for s in snrs], rows))
    if not types:
        report.add("Only clean rows: no robustness plot.")
        return
    figure = report.plots.figure(min(4.0 * min(len(types), 4), 16), 3.6 * math.ceil(len(types) / 4))
    if figure is None:
        return
    axes = figure.subplots(math.ceil(len(types) / 4), min(len(types), 4), sharey=True, squeeze=False).ravel()
    for ax, noise in zip(axes, types, strict=False):
        for variant in variants:
            color = report.plots.color(variant)
            part = curves.loc[variant] if variant in curves.index.get_level_values(0) else None
            if part is not None and noise in part.index.get_level_values(0):
                points = part.loc[noise].sort_index()
                ax.plot(points.index, points["mean"], marker="o", color=color, label=variant)
            if _finite(clean.get(variant)):
                ax.axhline(clean[variant], color=color, linestyle="--", linewidth=1,
                           label=f"{variant} (clean)")
        ax.set_title(noise)
        ax.set_xlabel("SNR (dB)")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(types):]:
        ax.set_visible(False)
    axes[0].set_ylabel("test macro AUC")
    axes[0].legend(fontsize="x-small")
    name = report.plots.save(figure, "robustness" if index == 0 else f"robustness_{index + 1}", "Robustness")
    report.image(name, "Robustness to noise (dashed: clean)")


def _method_label(method: str | None) -> str:
    return NO_PRETRAINING if method is None else METHOD_NAMES.get(method, method)


def _method_order(method: str | None) -> tuple[int, str]:
    order = [None, "simclr", "byol", "swav", "cpc"]
    return (order.index(method), "") if method in order else (len(order), str(method))


def _column_of(mode: str | None) -> str | None:
    # Supervised training and fine-tuning a random encoder both train the whole network from
    # scratch: the paper lists them together in the fine-tune column of its "none" row.
    return {"linear": "linear", "finetune": "finetune", "supervised": "finetune"}.get(str(mode))


def _evaluation_section(report: _Report, evaluations: list[Evaluation]) -> None:
    def method_of(e: Evaluation) -> str | None:
        method = e.data.get("method")
        return None if e.data.get("mode") == "supervised" or method in (None, "", "none") else str(method)

    # Paper layout: only full-label runs are comparable with the published table.
    cells: dict[tuple[str, str | None], dict[str, list[float]]] = {}
    excluded = 0
    for e in evaluations:
        column = _column_of(e.data.get("mode"))
        if column is None or (e.label_fraction is not None and abs(e.label_fraction - 1.0) > 1e-9):
            excluded += 1
            continue
        key = (str(e.data.get("encoder") or "?"), method_of(e))
        cells.setdefault(key, {}).setdefault(column, []).append(float(e.data["test_macro_auc"]))
    published_order = list(dict.fromkeys(enc for enc, _ in PUBLISHED))
    encoders = published_order + sorted({k[0] for k in cells} - set(published_order))
    keys = sorted(set(cells) | set(PUBLISHED),
                  key=lambda k: (encoders.index(k[0]), _method_order(k[1])))
    rows = []
    for encoder, method in keys:
        ours = cells.get((encoder, method), {})
        published = PUBLISHED.get((encoder, method), {})
        pub = [f"{published[c][0]:.3f} ± {published[c][1]:.3f}" if c in published else "—"
               for c in ("linear", "finetune")]
        model = encoder + (f" ({PUBLISHED_MODEL_NAMES[encoder]})" if PUBLISHED_MODEL_NAMES.get(encoder, encoder)
                           != encoder else "")
        pretraining = _method_label(method) + (f" (published: {published['note']})" if "note" in published else "")
        rows.append([model, pretraining, fmt_mean_std(ours.get("linear", [])),
                     fmt_mean_std(ours.get("finetune", []))] + pub)
    report.add("## Paper comparison (PTB-XL, test macro AUC)",
               "Layout of Mehari & Strodthoff (2022): rows are the pretraining method, columns the downstream "
               "protocol. The *published* columns are the paper's numbers (mean ± std over runs, 71 "
               "statements) as a reference; ours are from the evaluation summaries found here, averaged "
               "when several share a cell. The 'none' row holds supervised training (fine-tune column) and a "
               "linear head on a randomly initialised encoder (linear column)."
               + (f" {excluded} summary(ies) with a label fraction below 100% or an unknown mode are left out "
                  "of this table." if excluded else ""),
               md_table(["model", "pretraining", "linear (ours)", "fine-tune (ours)", "linear (published)",
                         "fine-tune (published)"], rows))
    rows = []
    ordered = sorted(evaluations, key=lambda e: (str(e.data.get("encoder")), _method_order(method_of(e)),
                                                 str(e.data.get("mode")), str(e.path)))
    for e in ordered:
        d = e.data
        ci = d.get("test_macro_auc_ci") or [None, None]
        ci = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else [None, None]
        rows.append([d.get("variant") or "—", d.get("mode"), d.get("method") or "—", d.get("encoder"),
                     fmt_fraction(e.label_fraction) if e.label_fraction is not None else "—",
                     fmt_auc(d.get("val_macro_auc")), fmt_auc_ci(d["test_macro_auc"], *ci),
                     _key_text(d.get("labels_scored")), _key_text(d.get("best_epoch")), f"`{report.rel(e.path.parent)}`"])
    report.add("## Evaluation summaries",
               md_table(["variant", "mode", "method", "encoder", "label fraction", "val AUC", "test AUC [CI]",
                         "labels", "best epoch", "run"], rows))
    per_label = {f"{e.data.get('variant') or report.rel(e.path.parent)}": e.data.get("per_label_auc")
                 for e in ordered if isinstance(e.data.get("per_label_auc"), dict)}
    if per_label:
        labels = sorted({label for aucs in per_label.values() for label in aucs})
        label_rows = [[label] + [fmt_auc(aucs.get(label)) for aucs in per_label.values()] for label in labels]
        report.add(f"<details><summary>Per-label test AUC ({len(labels)} labels)</summary>",
                   md_table(["label"] + list(per_label), label_rows), "</details>")


def _validation_metric(history: list[dict[str, Any]]) -> str | None:
    for key in ("val_macro_auc", "val_loss"):
        if any(_finite(h.get(key)) for h in history):
            return key
    return None


def _pretraining_section(report: _Report, runs: list[PretrainRun]) -> None:
    report.add("## Pretraining runs")
    rows, images = [], []
    used: set[str] = set()
    for run in runs:
        history = run.history
        epochs = [h.get("epoch", i) for i, h in enumerate(history)]
        metric = _validation_metric(history)
        values = [h.get(metric) for h in history] if metric else []
        best = "—"
        if metric:
            finite = [float(v) for v in values if _finite(v)]
            best = fmt_auc(max(finite) if metric == "val_macro_auc" else min(finite))
        speeds = [float(h["samples_per_s"]) for h in history if _finite(h.get("samples_per_s"))]
        last_loss = next((h["loss"] for h in reversed(history) if _finite(h.get("loss"))), None)
        rows.append([run.run_dir.name, _method_label(run.method) if run.method else "?", run.encoder or "?",
                     len(history), f"{float(last_loss):.4f}" if _finite(last_loss) else "—",
                     f"{best} ({metric})" if metric else "—",
                     f"{np.median(speeds):,.0f}" if speeds else "—", f"`{report.rel(run.checkpoint)}`"])
        stem = f"pretraining_{_slug(run.run_dir.name)}"
        while stem in used:  # two runs with one name in different folders
            stem += "_"
        used.add(stem)
        figure = report.plots.figure(6.4, 3.8)
        if figure is None:
            continue
        from matplotlib.ticker import MaxNLocator
        ax = figure.add_subplot()
        loss = [float(h["loss"]) if _finite(h.get("loss")) else np.nan for h in history]
        lines = ax.plot(epochs, loss, marker=".", color="C0", label="training loss")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss", color="C0")
        ax.grid(True, alpha=0.3)
        if metric:
            other = ax.twinx()  # the loss and the validation metric have unrelated scales
            lines += other.plot(epochs, [float(v) if _finite(v) else np.nan for v in values], marker="o",
                                color="C1", label=metric)
            other.set_ylabel(metric, color="C1")
        ax.legend(lines, [line.get_label() for line in lines], fontsize="small")
        ax.set_title(f"{run.run_dir.name} ({run.method or '?'}, {run.encoder or '?'})", fontsize="medium")
        images.append((report.plots.save(figure, stem, f"Pretraining {run.run_dir.name}"), run.run_dir.name))
    report.add(md_table(["run", "method", "encoder", "epochs", "final loss", "best validation", "samples/s (median)",
                         "checkpoint"], rows))
    for name, run_name in images:
        report.image(name, f"Pretraining curves of {run_name}")


# --------------------------------------------------------------------------------------------- entry point


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def write_report(directory: Path, out: Path | None = None) -> Path:
    """Scan ``directory`` for result artefacts and write a Markdown report with PNG plots.

    ``out`` is the Markdown file (default ``directory/report/report.md``; a folder gets
    ``report.md`` inside it); plots are written beside it. Returns the Markdown path.
    """
    directory = Path(directory).resolve()
    if not directory.is_dir():
        from ecg_ray.errors import EcgRayError

        raise EcgRayError(f"{directory}: not a directory")
    out = Path(out) if out is not None else directory / "report" / "report.md"
    if out.suffix.lower() != ".md" or out.is_dir():
        out = out / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)

    found = scan(directory)
    plots = _Plots(out.parent, _variant_colors(found))
    report = _Report(directory, plots, found)
    body = _Report(directory, plots, found)

    # Every section runs on its own: a table of an unexpected shape is reported, not fatal.
    def guarded(path: Path, fn, *args) -> None:
        mark = len(body.lines)
        try:
            fn(*args)
        except Exception as exc:
            del body.lines[mark:]
            found.skipped.append((path, f"could not be reported: {_reason(exc)}"))

    if found.evaluations:
        guarded(found.evaluations[0].path, _evaluation_section, body, found.evaluations)
    if found.results:
        body.add("## Sweep results")
        for i, table in enumerate(found.results):
            guarded(table.path, _results_section, body, table, i)
    if found.robustness:
        body.add("## Robustness")
        for i, table in enumerate(found.robustness):
            guarded(table.path, _robustness_section, body, table, i)
    if found.pretraining:
        guarded(found.pretraining[0].run_dir, _pretraining_section, body, found.pretraining)

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report.add("# ecg_ray report", f"- Directory: `{directory}`\n- Generated: {now}")
    if found.empty():
        report.add("**Nothing known was found** in this directory: no sweep results (`results.parquet`/"
                   "`.csv`), robustness tables (`robustness.parquet`/`.csv`), evaluation summaries "
                   f"(`{EVALUATION_FILE}`) or pretraining histories (`checkpoint_*/{HISTORY_FILE}`).")
    else:
        trials = sum(len(t.frame) for t in found.results)
        report.add("Found: " + ", ".join([
            f"{_plural(len(found.results), 'results table')} ({_plural(trials, 'trial')})",
            _plural(len(found.robustness), "robustness table"),
            f"{len(found.evaluations)} evaluation summar{'y' if len(found.evaluations) == 1 else 'ies'}",
            _plural(len(found.pretraining), "pretraining run"),
        ]) + f"; {_plural(len(found.skipped), 'file')} skipped.")
    if plots.written:
        report.add("Plots: " + ", ".join(f"[{title}]({name})" for name, title in plots.written))
    if plots.unavailable:
        report.add("_Plots were not drawn: matplotlib is not installed._")
    report.lines += body.lines
    if found.skipped:
        report.add("## Skipped", md_table(["file", "reason"], [[f"`{report.rel(p)}`", r] for p, r in found.skipped]))

    text = "\n".join(report.lines).rstrip() + "\n"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, out)  # a reader (or a crash) never sees half a report
    return out
