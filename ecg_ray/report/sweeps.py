"""The sweep results section: test macro AUC per variant and amount of labelled training data,
hyperparameters selected on validation, every trial, and the label-efficiency curves.

The amount of labels comes from two sweepable keys: ``data.train_folds`` (the paper's protocol:
train on folds 1..k of 1-8, a fraction k/8) and ``data.label_fraction`` (ours: a stratified share of
the labels of every training fold). A table may vary either or both; each row gets one
``LabelColumn`` and the two kinds are drawn as separate curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecg_ray.report.document import Report
from ecg_ray.report.formatting import (
    PAPER_TRAIN_FOLDS,
    finite,
    fmt_auc,
    fmt_auc_ci,
    fmt_fraction,
    fmt_mean_std,
    folds_label,
    key_text,
    md_table,
    parse_folds,
)
from ecg_ray.report.plots import Plots
from ecg_ray.report.scan import Table

FOLDS_KEY = "data.train_folds"
FRACTION_KEY = "data.label_fraction"
# Trial states whose metrics are not final results (Ray Tune's names).
UNFINISHED_STATUS = {"ERROR", "PENDING", "RUNNING", "PAUSED"}
# Dotted config keys that can differ between repeats of one setting without being hyperparameters to
# select over: paths (each seed may pretrain its own encoder file); keys ending in "seed" are repeats too.
NOT_HYPERPARAMETERS = {"data.store", "data.stores", "eval.pretrained", "eval.encoder", "eval.variant",
                       FOLDS_KEY, FRACTION_KEY}
MAX_TRIAL_ROWS = 200
CURVES = {"folds": "folds 1..k", "stratified": "stratified"}


@dataclass(frozen=True)
class LabelColumn:
    """How much labelled training data a trial had: ``axis`` is full, folds, stratified or combined."""

    fraction: float
    axis: str
    folds: tuple[int, ...] | None = None

    def label(self, both_kinds: bool) -> str:
        if self.axis == "full":
            return "100% labels"
        if self.axis == "folds":
            return f"{folds_label(self.folds)} ({fmt_fraction(self.fraction)})"
        if self.axis == "stratified":
            # With only one kind in the table the short form keeps the historic header.
            return f"{fmt_fraction(self.fraction)} " + ("stratified" if both_kinds else "labels")
        return f"{folds_label(self.folds)} × stratified ({fmt_fraction(self.fraction)})"

    def sort_key(self) -> tuple[float, str]:
        return self.fraction, self.axis


def label_column(folds_value, fraction_value, has_folds: bool, has_fraction: bool) -> LabelColumn | None:
    folds = parse_folds(folds_value) if has_folds else None
    stratified = float(fraction_value) if has_fraction and finite(fraction_value) else None
    if folds is None and stratified is None:
        return None
    # The paper's fraction is the share of its 8 training folds; a run on more folds counts as all.
    fold_share = min(len(folds) / len(PAPER_TRAIN_FOLDS), 1.0) if folds else 1.0
    stratified = 1.0 if stratified is None else stratified
    if fold_share >= 1.0 and stratified >= 1.0:
        return LabelColumn(1.0, "full")
    if stratified >= 1.0:
        return LabelColumn(fold_share, "folds", folds)
    if fold_share >= 1.0:
        return LabelColumn(stratified, "stratified")
    return LabelColumn(fold_share * stratified, "combined", folds)


def label_columns(frame: pd.DataFrame) -> pd.Series:
    has_folds, has_fraction = FOLDS_KEY in frame.columns, FRACTION_KEY in frame.columns
    folds = frame[FOLDS_KEY] if has_folds else pd.Series(None, index=frame.index, dtype=object)
    fraction = frame[FRACTION_KEY] if has_fraction else pd.Series(np.nan, index=frame.index)
    return pd.Series([label_column(f, s, has_folds, has_fraction) for f, s in zip(folds, fraction, strict=True)],
                     index=frame.index, dtype=object)


def _trial_status_ok(frame: pd.DataFrame) -> pd.Series:
    if "status" not in frame.columns:
        return pd.Series(True, index=frame.index)
    return ~frame["status"].astype(str).str.upper().isin(UNFINISHED_STATUS)


def _hyperparameter_columns(frame: pd.DataFrame) -> list[str]:
    """Dotted config keys that vary within one (variant, amount of labels) and are not a path or a seed.

    Keys that only differ between variants (method, encoder, mode) describe the variant itself.
    """
    group = frame.groupby(["variant", "_column_key"]).ngroup()
    columns = []
    for column in frame.columns:
        column = str(column)
        if "." not in column or column in NOT_HYPERPARAMETERS or column.endswith("seed"):
            continue
        text = frame[column].map(key_text)
        if (text.groupby(group).nunique() > 1).any():
            columns.append(column)
    return columns


@dataclass
class _Cell:
    variant: str
    column: LabelColumn | None
    rows: pd.DataFrame
    selected: str
    pooled_without_validation: bool = False

    @property
    def fraction(self) -> float:
        return self.column.fraction if self.column is not None else float("nan")

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
        if finite(low) and finite(high):
            return max(0.0, self.mean - float(low)), max(0.0, float(high) - self.mean)
        return None


def _select_cells(frame: pd.DataFrame, hyper: list[str]) -> list[_Cell]:
    """Per (variant, amount of labels): the hyperparameters with the best mean validation AUC, averaged
    over repeats (seeds). Choosing on validation, never on test, keeps the test numbers honest."""
    cells = []
    frame = frame.copy()
    frame["_hyper"] = (frame[hyper].apply(lambda r: ", ".join(f"{c}={key_text(r[c])}" for c in hyper), axis=1)
                       if hyper else "")
    for (variant, _), group in frame.groupby(["variant", "_column_key"], sort=True):
        subgroups = list(group.groupby("_hyper", sort=True))
        pooled = False
        if len(subgroups) == 1:
            selected, rows = subgroups[0]
        else:
            val = {key: sub["val_macro_auc"].mean() if "val_macro_auc" in sub.columns else np.nan
                   for key, sub in subgroups}
            if any(finite(v) for v in val.values()):
                selected = max(val, key=lambda k: val[k] if finite(val[k]) else -math.inf)
                rows = group[group["_hyper"] == selected]
            else:
                selected, rows, pooled = "all trials (no validation AUC to select on)", group, True
        cells.append(_Cell(str(variant), group["_column"].iloc[0], rows, selected, pooled))
    return cells


def results_section(report: Report, table: Table, index: int) -> None:
    frame = table.frame
    report.add(f"### Sweep results: `{report.rel(table.path)}`")
    status = ""
    if "status" in frame.columns:
        counts = frame["status"].astype(str).value_counts()
        status = " Trial status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "."
    usable = frame[_trial_status_ok(frame) & frame["test_macro_auc"].map(finite)].copy()
    report.add(f"{len(frame)} trial(s), {len(usable)} with a test macro AUC.{status}")
    if usable.empty:
        report.add("No finished trial with a test macro AUC; nothing to tabulate.")
        return
    usable["_column"] = label_columns(usable)
    # A hashable, sortable stand-in for the column (None for rows without any label information).
    usable["_column_key"] = usable["_column"].map(lambda c: "" if c is None else f"{c.fraction:.9f}|{c.axis}|{c.folds}")
    hyper = _hyperparameter_columns(usable)
    cells = _select_cells(usable, hyper)
    columns = sorted({c.column for c in cells if c.column is not None}, key=LabelColumn.sort_key)
    both = any(c.axis in ("folds", "combined") for c in columns) and any(c.axis == "stratified" for c in columns)
    variants = sorted({c.variant for c in cells})
    by_key = {(c.variant, c.column): c for c in cells}
    shown = columns or [None]
    header = ["variant"] + ([c.label(both) for c in columns] if columns else ["test macro AUC"])
    rows = [[variant] + [by_key[(variant, c)].text() if (variant, c) in by_key else "—" for c in shown]
            for variant in variants]
    reduced = {c.axis for c in columns} - {"full"}
    what = ("label fraction" if reduced <= {"stratified"} else "training folds" if "stratified" not in reduced
            else "amount of labelled training data")
    report.add("Test macro AUC [95% bootstrap CI] per variant"
               + (f" and {what}" if columns else "")
               + "; mean ± std (n) where a cell has repeated runs.", md_table(header, rows))
    if hyper:
        report.add(f"Hyperparameters varied in this sweep: {', '.join(f'`{h}`' for h in hyper)}. Each cell uses "
                   "the setting with the best mean validation macro AUC (selected on validation, not test):")
        sel_rows = [[c.variant, c.column.label(both) if c.column else "—", c.selected,
                     fmt_auc(c.rows["val_macro_auc"].mean()) if "val_macro_auc" in c.rows.columns else "—",
                     len(c.rows)] for c in cells]
        report.add(md_table(["variant", "training labels", "selected", "val macro AUC", "runs"], sel_rows))
    _trials_table(report, usable, hyper, both)
    if len({c.fraction for c in columns}) >= 2:
        _label_efficiency(report, cells, variants, columns, index)


def _trials_table(report: Report, usable: pd.DataFrame, hyper: list[str], both: bool) -> None:
    # The per-trial table is long for real sweeps, so it is folded away (GitHub renders <details>).
    detail_cols = [c for c in ("eval.mode", "method.name", "model.encoder") if c in usable.columns] + hyper
    ordered = usable.assign(_f=usable["_column"].map(lambda c: np.nan if c is None else c.fraction),
                            _v=-usable.get("val_macro_auc", pd.Series(np.nan, index=usable.index)))
    ordered = ordered.sort_values(["variant", "_f", "_column_key", "_v"], na_position="last")
    trial_rows = []
    for _, row in ordered.head(MAX_TRIAL_ROWS).iterrows():
        trial_rows.append([row["variant"], row["_column"].label(both) if row["_column"] is not None else "—"]
                          + [key_text(row[c]) for c in detail_cols]
                          + [fmt_auc(row.get("val_macro_auc")),
                             fmt_auc_ci(row["test_macro_auc"], row.get("test_macro_auc_ci_low"),
                                        row.get("test_macro_auc_ci_high")),
                             key_text(row.get("labels_scored")), key_text(row.get("best_epoch")),
                             key_text(row.get("trial_id"))])
    more = f" (first {MAX_TRIAL_ROWS} of {len(ordered)})" if len(ordered) > MAX_TRIAL_ROWS else ""
    report.add(f"<details><summary>All finished trials{more}</summary>",
               md_table(["variant", "training labels"] + detail_cols
                        + ["val AUC", "test AUC [CI]", "labels", "best epoch", "trial"], trial_rows),
               "</details>")


def _curves(cells: list[_Cell], variant: str) -> dict[str, list[_Cell]]:
    """Label-efficiency curves of one variant: the full-label point closes both kinds of curve."""
    mine = [c for c in cells if c.variant == variant and c.column is not None]
    full = [c for c in mine if c.column.axis == "full"]
    curves = {}
    for axis in CURVES:
        points = [c for c in mine if c.column.axis == axis]
        if points:
            curves[axis] = sorted(points + full, key=lambda c: c.fraction)
    if not curves and full:
        curves["full"] = full
    return curves


def _label_efficiency(report: Report, cells: list[_Cell], variants: list[str], columns: list[LabelColumn],
                      index: int) -> None:
    kinds = {c.axis for c in columns} & set(CURVES)
    described = []
    if "folds" in kinds:
        described.append("*folds 1..k* (solid): trained on training folds 1..k of 1-8 only, a fraction k/8 "
                         "(`data.train_folds`, the paper's protocol)")
    if "stratified" in kinds:
        described.append("*stratified* (dashed): a stratified share of the labels of every training fold "
                         "(`data.label_fraction`)")
    combined = any(c.axis == "combined" for c in columns)
    report.add("#### Label efficiency",
               "Test macro AUC against the share of labelled training data"
               + (": " + "; ".join(described) if described else "")
               + ". Error bars: std over repeats, else the single run's 95% CI."
               + (" Trials that reduce both the folds and the stratified fraction are in the table only."
                  if combined else ""))
    name = _label_efficiency_plot(report.plots, cells, variants, columns, index)
    if name:
        report.image(name, "Label efficiency")


def _label_efficiency_plot(plots: Plots, cells: list[_Cell], variants: list[str], columns: list[LabelColumn],
                           index: int) -> str | None:
    figure = plots.figure(6.4, 4.2)
    if figure is None:
        return None
    ax = figure.add_subplot()
    kinds = {c.axis for c in columns} & set(CURVES)
    for variant in variants:
        for axis, points in _curves(cells, variant).items():
            x = [c.fraction * 100 for c in points]
            y = [c.mean for c in points]
            errors = [c.error() or (0.0, 0.0) for c in points]
            # With both kinds in one table the legend says which curve is which; one kind keeps it short.
            label = f"{variant} ({CURVES[axis]})" if len(kinds) > 1 and axis in CURVES else variant
            ax.errorbar(x, y, yerr=np.array(errors).T, marker="o" if axis != "stratified" else "s", capsize=3,
                        label=label, color=plots.color(variant), linestyle="--" if axis == "stratified" else "-")
    ax.set_xscale("log")
    fractions = sorted({c.fraction for c in columns if c.axis != "combined"})
    ax.set_xticks([f * 100 for f in fractions], [fmt_fraction(f) for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("labelled training data")
    ax.set_ylabel("test macro AUC")
    ax.set_title("Label efficiency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return plots.save(figure, "label_efficiency" if index == 0 else f"label_efficiency_{index + 1}",
                      "Label efficiency")
