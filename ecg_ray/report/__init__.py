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
Without matplotlib the tables are still written. The package never imports torch, so a report
can be built anywhere the result files are.

Modules: ``scan`` (finding and loading artefacts), ``formatting`` (numbers and Markdown tables),
``plots`` (figures and PNG files), ``document`` (the page), ``published`` (the paper's numbers),
``evaluations`` (paper comparison and per-store tables), ``lead_subsets`` (models on reduced lead
sets), ``significance`` (paired tests against baselines), ``sweeps`` (results and label
efficiency), ``robustness``, ``pretraining``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from ecg_ray.report.document import Report
from ecg_ray.report.evaluations import evaluation_section
from ecg_ray.report.formatting import fmt_auc, fmt_auc_ci, fmt_mean_std, md_table, plural, reason
from ecg_ray.report.plots import Plots, variant_colors
from ecg_ray.report.pretraining import pretraining_section
from ecg_ray.report.published import PUBLISHED
from ecg_ray.report.robustness import robustness_section
from ecg_ray.report.scan import scan
from ecg_ray.report.significance import Significance
from ecg_ray.report.sweeps import results_section
from ecg_ray.run_layout import EVALUATION_FILE, HISTORY_FILE, RAY_SNAPSHOT, RUN_CONFIG

__all__ = ["EVALUATION_FILE", "HISTORY_FILE", "PUBLISHED", "RAY_SNAPSHOT", "RUN_CONFIG", "fmt_auc", "fmt_auc_ci",
           "fmt_mean_std", "md_table", "scan", "write_report"]


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
    plots = Plots(out.parent, variant_colors(found))
    report = Report(directory, plots, found)
    body = Report(directory, plots, found)

    # Every section runs on its own: a table of an unexpected shape is reported, not fatal.
    def guarded(path: Path, fn, *args) -> None:
        mark = len(body.lines)
        try:
            fn(*args)
        except Exception as exc:
            del body.lines[mark:]
            found.skipped.append((path, f"could not be reported: {reason(exc)}"))

    if found.evaluations:
        guarded(found.evaluations[0].path, evaluation_section, body, found.evaluations, Significance())
    if found.results:
        body.add("## Sweep results")
        for i, table in enumerate(found.results):
            guarded(table.path, results_section, body, table, i)
    if found.robustness:
        body.add("## Robustness")
        for i, table in enumerate(found.robustness):
            guarded(table.path, robustness_section, body, table, i)
    if found.pretraining:
        guarded(found.pretraining[0].run_dir, pretraining_section, body, found.pretraining, found.method_names())

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report.add("# ecg_ray report", f"- Directory: `{directory}`\n- Generated: {now}")
    if found.empty():
        report.add("**Nothing known was found** in this directory: no sweep results (`results.parquet`/"
                   "`.csv`), robustness tables (`robustness.parquet`/`.csv`), evaluation summaries "
                   f"(`{EVALUATION_FILE}`) or pretraining histories (`checkpoint_*/{HISTORY_FILE}`).")
    else:
        trials = sum(len(t.frame) for t in found.results)
        report.add("Found: " + ", ".join([
            f"{plural(len(found.results), 'results table')} ({plural(trials, 'trial')})",
            plural(len(found.robustness), "robustness table"),
            f"{len(found.evaluations)} evaluation summar{'y' if len(found.evaluations) == 1 else 'ies'}",
            plural(len(found.pretraining), "pretraining run"),
        ]) + f"; {plural(len(found.skipped), 'file')} skipped.")
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
