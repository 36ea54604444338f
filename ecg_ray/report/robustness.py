"""The robustness section: test macro AUC per variant and noise type at each SNR, with a plot."""

from __future__ import annotations

import math

import pandas as pd

from ecg_ray.report.document import Report
from ecg_ray.report.formatting import finite, fmt_auc, fmt_snr, md_table
from ecg_ray.report.scan import Table


def _is_clean(frame: pd.DataFrame) -> pd.Series:
    noise = frame["noise_type"].str.lower()
    return noise.isin(["none", "clean", ""]) | ~frame["snr_db"].map(finite)


def robustness_section(report: Report, table: Table, index: int) -> None:
    frame = table.frame[table.frame["test_macro_auc"].map(finite)]
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
            if finite(clean.get(variant)):
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
