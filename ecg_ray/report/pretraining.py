"""The pretraining section: one row and one loss/validation curve per pretraining run.

Each row also says whether the run ended collapsed (:func:`ecg_ray.train.collapse.assess` on its
history: embedding std per dimension, loss against its uniform-similarity value), and the
collapsed runs are listed with the reason under the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecg_ray.report.document import Report
from ecg_ray.report.formatting import finite, fmt_auc, md_table, slug
from ecg_ray.report.published import method_label
from ecg_ray.report.scan import PretrainRun
from ecg_ray.train.collapse import LOSS_TOLERANCE, STD_FRACTION, assess


def _validation_metric(history: list[dict[str, Any]]) -> str | None:
    for key in ("val_macro_auc", "val_loss"):
        if any(finite(h.get(key)) for h in history):
            return key
    return None


def pretraining_section(report: Report, runs: list[PretrainRun], names: dict[str, str] | None = None) -> None:
    """Per-run table and curves; ``names`` maps a method to its display name (from the evaluations)."""
    names = names or {}
    report.add("## Pretraining runs")
    rows, images, collapsed = [], [], []
    used: set[str] = set()
    for run in runs:
        history = run.history
        verdict = assess(history)
        if verdict is None:
            collapse_cell = "—"  # a run from before the figures were recorded
        elif verdict["collapsed"]:
            collapse_cell = "**yes**"
            collapsed.append((run.run_dir.name, verdict["reason"]))
        else:
            collapse_cell = f"no (std {verdict['embedding_std']:.3g})"
        epochs = [h.get("epoch", i) for i, h in enumerate(history)]
        metric = _validation_metric(history)
        values = [h.get(metric) for h in history] if metric else []
        best = "—"
        if metric:
            scores = [float(v) for v in values if finite(v)]
            best = fmt_auc(max(scores) if metric == "val_macro_auc" else min(scores))
        speeds = [float(h["samples_per_s"]) for h in history if finite(h.get("samples_per_s"))]
        last_loss = next((h["loss"] for h in reversed(history) if finite(h.get("loss"))), None)
        rows.append([run.run_dir.name, method_label(run.method, names.get(run.method)) if run.method else "?", run.encoder or "?",
                     len(history), f"{float(last_loss):.4f}" if finite(last_loss) else "—",
                     f"{best} ({metric})" if metric else "—",
                     f"{np.median(speeds):,.0f}" if speeds else "—", f"`{report.rel(run.checkpoint)}`",
                     collapse_cell])
        stem = f"pretraining_{slug(run.run_dir.name)}"
        while stem in used:  # two runs with one name in different folders
            stem += "_"
        used.add(stem)
        figure = report.plots.figure(6.4, 3.8)
        if figure is None:
            continue
        from matplotlib.ticker import MaxNLocator
        ax = figure.add_subplot()
        loss = [float(h["loss"]) if finite(h.get("loss")) else np.nan for h in history]
        lines = ax.plot(epochs, loss, marker=".", color="C0", label="training loss")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss", color="C0")
        ax.grid(True, alpha=0.3)
        if metric:
            other = ax.twinx()  # the loss and the validation metric have unrelated scales
            lines += other.plot(epochs, [float(v) if finite(v) else np.nan for v in values], marker="o",
                                color="C1", label=metric)
            other.set_ylabel(metric, color="C1")
        ax.legend(lines, [line.get_label() for line in lines], fontsize="small")
        ax.set_title(f"{run.run_dir.name} ({run.method or '?'}, {run.encoder or '?'})", fontsize="medium")
        images.append((report.plots.save(figure, stem, f"Pretraining {run.run_dir.name}"), run.run_dir.name))
    report.add(md_table(["run", "method", "encoder", "epochs", "final loss", "best validation", "samples/s (median)",
                         "checkpoint", "collapsed"], rows))
    if collapsed:
        report.add("Collapsed runs (their encoders are unlikely to be useful):\n\n"
                   + "\n".join(f"- `{name}`: {why}" for name, why in collapsed))
    if any(row[-1] != "—" for row in rows):
        report.add("*collapsed*: in the last epoch, the mean per-dimension standard deviation of the L2-normalised "
                   f"embeddings (std) is below {STD_FRACTION:g}/sqrt(d), or the loss is within {LOSS_TOLERANCE:.1%} "
                   "of its value when every similarity is equal.")
    for name, run_name in images:
        report.image(name, f"Pretraining curves of {run_name}")
