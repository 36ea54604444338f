"""The lead-subset table: a model's test macro AUC on each lead set it was evaluated with.

Written when an evaluation summary's ``leads`` (the leads the model saw, the others zeroed:
``ecg-ray evaluate --set data.leads=[I,II,V1]``) holds fewer than the 12 leads. Evaluations of one
model (store, label set, mode, encoder, pretraining method and source, windowing) form a group; a
group appears when at least one of its evaluations used a subset, with its 12-lead evaluations
first, so each reduced lead set is read against the full one. A summary written before ``leads``
existed counts as all 12 leads.
"""

from __future__ import annotations

from collections import defaultdict

from ecg_ray.report.document import Report
from ecg_ray.report.formatting import fmt_auc_ci, md_table
from ecg_ray.report.published import method_label
from ecg_ray.report.scan import Evaluation

ALL_LEADS = 12


def leads_of(e: Evaluation) -> tuple[str, ...] | None:
    """The leads an evaluation kept, or None for all 12 (no ``leads`` key, or every lead listed)."""
    leads = e.data.get("leads")
    if not isinstance(leads, (list, tuple)) or len(leads) >= ALL_LEADS:
        return None
    return tuple(str(lead) for lead in leads)


def _model_key(e: Evaluation) -> tuple[str, ...]:
    d = e.data
    return tuple(str(d.get(k)) for k in ("store", "label_set", "mode", "encoder", "method", "pretrained", "window"))


def _method_of(d: dict) -> str | None:
    method = d.get("method")  # as evaluations.method_of: supervised runs and "none" have no pretraining
    return None if d.get("mode") == "supervised" or method in (None, "", "none") else str(method)


def _lead_set_text(leads: tuple[str, ...] | None) -> str:
    return "all 12" if leads is None else f"{','.join(leads)} ({len(leads)})"


def lead_subset_section(report: Report, evaluations: list[Evaluation]) -> None:
    """The table, when some evaluation used a lead subset; nothing otherwise."""
    groups: dict[tuple[str, ...], list[Evaluation]] = defaultdict(list)
    for e in evaluations:
        groups[_model_key(e)].append(e)
    shown = {key: group for key, group in groups.items() if any(leads_of(e) is not None for e in group)}
    if not shown:
        return
    rows = []
    for key in sorted(shown):
        # all 12 first, then fewer and fewer leads; the same lead set in run order
        for e in sorted(shown[key], key=lambda e: (-len(leads_of(e) or range(ALL_LEADS)), leads_of(e) or (),
                                                   str(e.path))):
            d = e.data
            ci = d.get("test_macro_auc_ci")
            ci = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else [None, None]
            rows.append([d.get("variant") or "—", d.get("encoder") or "—",
                         method_label(_method_of(d), d.get("method_display")), d.get("mode") or "—",
                         _lead_set_text(leads_of(e)), fmt_auc_ci(d.get("test_macro_auc"), *ci),
                         f"`{report.rel(e.path.parent)}`"])
    report.add("## Lead subsets",
               "Test macro AUC (ours, 95% bootstrap CI) of each model on the leads it was evaluated with; the "
               "leads not listed were zeroed in training, validation and test inputs (`data.leads`). A model's "
               "12-lead evaluations come first.",
               md_table(["variant", "encoder", "method", "mode", "lead set", "test AUC [CI] (ours)", "run"], rows))
