"""Evaluation summaries: the paper-comparison table, one table of the same layout per other
(store, label set), and the list of every summary with both AUC scales.

Only an evaluation that follows the paper's protocol goes beside the published numbers: tested on
a PTB-XL store only, label set ``all``, training folds within 1-8, validation fold 9, test fold 10,
all 12 leads and sliding windows (these fields are in evaluation.json; an older file without them
counts as "store unknown", and one without ``leads`` / ``window`` as 12 leads and sliding windows).
A synthetic demo probe over 6 labels next to the paper's 71-statement numbers would mislead. Lead
subsets get their own table (:mod:`ecg_ray.report.lead_subsets`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

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
from ecg_ray.report.lead_subsets import lead_subset_section, leads_of
from ecg_ray.report.published import (
    PAPER_LABELS,
    PUBLISHED,
    RANDOM_INIT_LINEAR_JOBS,
    method_label,
    method_order,
    model_label,
)
from ecg_ray.report.scan import Evaluation, method_names
from ecg_ray.report.significance import MARK, N_BOOT, Significance, describe, is_significant, scale_of

FALLBACK_MARK = "†"
COLUMNS = {"linear": "linear", "finetune": "fine-tune"}
BASELINES = {"linear": "the random-init linear evaluation", "finetune": "supervised training"}


def method_of(e: Evaluation) -> str | None:
    method = e.data.get("method")
    return None if e.data.get("mode") == "supervised" or method in (None, "", "none") else str(method)


def column_of(mode: str | None) -> str | None:
    # Supervised training and fine-tuning a random encoder both train the whole network from
    # scratch: the paper lists them together in the fine-tune column of its "none" row.
    return {"linear": "linear", "finetune": "finetune", "supervised": "finetune"}.get(str(mode))


def paper_problems(e: Evaluation) -> list[str]:
    """Why an evaluation is off the paper's protocol; empty when it follows it."""
    d = e.data
    datasets = d.get("test_datasets")
    if not isinstance(datasets, dict):
        return ["which data it was tested on is not recorded (evaluation.json predates `test_datasets`)"]
    problems = []
    if set(datasets) != {"ptbxl"}:
        problems.append(f"tested on {', '.join(map(str, sorted(datasets))) or 'no dataset'}, not PTB-XL alone")
    if d.get("label_set") != "all":
        problems.append(f"label set `{d.get('label_set')}`, not `all`")
    train = parse_folds(d.get("train_folds"))
    if not train or not set(train) <= set(PAPER_TRAIN_FOLDS):
        problems.append(f"training folds {key_text(list(train or []))}, not within 1-8")
    if parse_folds(d.get("val_folds")) != (9,):
        problems.append(f"validation folds {key_text(list(parse_folds(d.get('val_folds')) or []))}, not [9]")
    if parse_folds(d.get("test_folds")) != (10,):
        problems.append(f"test folds {key_text(list(parse_folds(d.get('test_folds')) or []))}, not [10]")
    if leads_of(e) is not None:
        problems.append(f"leads {','.join(leads_of(e))} only (the others zeroed), not all 12")
    if d.get("window") == 0:
        problems.append("whole records scored, not sliding windows")
    return problems


@dataclass(frozen=True)
class Training:
    """The labelled training data of a run: folds (None: all of 1-8) and a stratified label fraction."""

    folds: tuple[int, ...] | None
    fraction: float

    @property
    def full(self) -> bool:
        return self.folds is None and self.fraction >= 1.0

    @property
    def share(self) -> float:
        folds = 1.0 if self.folds is None else len(self.folds) / len(PAPER_TRAIN_FOLDS)
        return folds * self.fraction

    def text(self) -> str:
        parts = []
        if self.folds is not None:
            within = set(self.folds) <= set(PAPER_TRAIN_FOLDS)
            parts.append(folds_label(self.folds) + (f" ({len(self.folds)}/8 of the training folds)" if within else ""))
        if self.fraction < 1.0:
            parts.append(f"stratified {fmt_fraction(self.fraction)} of the labels")
        return ", ".join(parts)


def training_of(e: Evaluation) -> Training:
    folds = parse_folds(e.data.get("train_folds"))
    fraction = e.label_fraction if e.label_fraction is not None and finite(e.label_fraction) else 1.0
    return Training(None if folds == PAPER_TRAIN_FOLDS else folds, float(fraction))


def _seed_order(e: Evaluation) -> tuple[float, str]:
    seed = e.data.get("seed")
    return (float(seed) if finite(seed) else float("inf"), str(e.path))


def _min_positives(evaluations: list[Evaluation]) -> int:
    values = {int(e.data["min_test_positives"]) for e in evaluations if finite(e.data.get("min_test_positives"))}
    return values.pop() if len(values) == 1 else 1


@dataclass
class _Table:
    markdown: str
    footnotes: list[str]
    missing_baselines: list[str]
    fallback: bool
    excluded: int


def _layout_table(evaluations: list[Evaluation], significance: Significance, paper: bool) -> _Table:
    """Rows: encoder x pretraining (x reduced training labels); columns: linear, fine-tune; with the
    published numbers beside them when ``paper``. Pretrained cells are tested against their baseline."""
    cells: dict[tuple[str, str | None, Training], dict[str, list[Evaluation]]] = defaultdict(lambda: defaultdict(list))
    excluded = 0
    for e in evaluations:
        column = column_of(e.data.get("mode"))
        if column is None:
            excluded += 1
            continue
        cells[(str(e.data.get("encoder") or "?"), method_of(e), training_of(e))][column].append(e)
    names = method_names(evaluations)
    full = Training(None, 1.0)
    keys = set(cells) | ({(enc, method, full) for enc, method in PUBLISHED} if paper else set())
    published_order = list(dict.fromkeys(enc for enc, _ in PUBLISHED))
    encoders = published_order + sorted({k[0] for k in keys} - set(published_order))
    keys = sorted(keys, key=lambda k: (encoders.index(k[0]), method_order(k[1]), -k[2].share, str(k[2].folds)))

    def sides(encoder: str, method: str | None, training: Training, column: str):
        """(baseline evaluations, this cell's evaluations), each first-to-compare first."""
        evals = sorted(cells.get((encoder, method, training), {}).get(column, []), key=_seed_order)
        # Fine-tune column: supervised training is the baseline; a fine-tuned random encoder only stands in.
        baseline = sorted(cells.get((encoder, None, training), {}).get(column, []),
                          key=lambda e: (column == "finetune" and e.data.get("mode") != "supervised", *_seed_order(e)))
        return baseline, evals

    # Comparisons are capped: full-label cells (the paper's table proper) get theirs first; the
    # results are cached, so the rendering below only reads them.
    for encoder, method, training in sorted(keys, key=lambda k: not k[2].full):
        for column in COLUMNS:
            baseline, evals = sides(encoder, method, training, column)
            if method is not None and baseline and evals:
                significance.compare(baseline[0].path, evals[0].path, _min_positives([baseline[0], evals[0]]))
    rows, footnotes, missing, any_fallback = [], [], [], False
    for encoder, method, training in keys:
        published = PUBLISHED.get((encoder, method), {}) if paper and training.full else {}
        pretraining = method_label(method, names.get(method)) + (f" (published: {published['note']})"
                                                                 if "note" in published else "")
        if not training.full:
            pretraining += f"; trained on {training.text()}"
        row = [model_label(encoder), pretraining]
        for column in COLUMNS:
            baseline, evals = sides(encoder, method, training, column)
            if not evals:
                not_run = (paper and method is None and column == "linear" and training.full
                           and encoder in RANDOM_INIT_LINEAR_JOBS)
                if not_run:
                    missing.append(encoder)
                row.append("not run" if not_run else "—")
                continue
            on_reference = paper and all(finite(e.data.get("test_macro_auc_reference")) for e in evals)
            key = "test_macro_auc_reference" if on_reference else "test_macro_auc"
            text = fmt_mean_std([e.data[key] for e in evals])
            if paper and not on_reference:
                text += FALLBACK_MARK
                any_fallback = True
            if method is not None and baseline:
                mark, note = _compare(significance, baseline, evals, paper,
                                      f"{model_label(encoder)} {pretraining}, {COLUMNS[column]}", column)
                text += mark
                footnotes.append(note)
            row.append(text)
        if paper:
            row += [f"{published[c][0]:.3f} ± {published[c][1]:.3f}" if c in published else "—" for c in COLUMNS]
        rows.append(row)
    header = ["model", "pretraining", "linear (ours)", "fine-tune (ours)"]
    if paper:
        header += ["linear (published)", "fine-tune (published)"]
    return _Table(md_table(header, rows), footnotes, missing, any_fallback, excluded)


def _compare(significance: Significance, baseline: list[Evaluation], evals: list[Evaluation], paper: bool,
             what: str, column: str) -> tuple[str, str]:
    """(mark for the cell, footnote line) for the first evaluation of each side."""
    several = " (first run of each side: lowest seed)" if len(baseline) > 1 or len(evals) > 1 else ""
    against = f"vs {BASELINES[column]}"
    result, why = significance.compare(baseline[0].path, evals[0].path, _min_positives([baseline[0], evals[0]]))
    if result is None:
        return "", f"- {what} {against}: significance not computed: {why}"
    part, on_reference = scale_of(result, paper)
    significant = is_significant(part)
    return (MARK if significant else ""), (f"- {what} {against}{several}: {describe(result, part, on_reference)}"
                                           + (f" ({MARK})" if significant else ""))


def _significance_text(table: _Table, significance: Significance) -> list[str]:
    if not table.footnotes:
        return []
    # One missing module would repeat the same reason on every line: say it once.
    if significance.unavailable and all(significance.unavailable in line for line in table.footnotes):
        return [f"Significance not computed: {significance.unavailable}."]
    return [f"`{MARK}`: the pretrained result differs from its baseline (linear column: {BASELINES['linear']}; "
            f"fine-tune column: {BASELINES['finetune']} of the same encoder and training labels) with p < 0.05, "
            f"paired bootstrap over the shared test records ({N_BOOT} resamples, seed 0). Difference = "
            "pretrained − baseline [95% CI]:", "\n".join(table.footnotes)]


def _store_of(e: Evaluation) -> str | None:
    store = e.data.get("store")
    return str(store) if store else None


def _label_count(evaluations: list[Evaluation]) -> list[int]:
    return sorted({int(e.data["n_labels"]) for e in evaluations if finite(e.data.get("n_labels"))})


def _paper_section(report: Report, store: str | None, evaluations: list[Evaluation], several_stores: bool,
                   significance: Significance) -> None:
    table = _layout_table(evaluations, significance, paper=True)
    shown = f"`{report.rel(store)}`" if store else "unknown"
    title = "## Paper comparison (PTB-XL, test macro AUC)" + (f" on {shown}" if several_stores else "")
    counts = _label_count(evaluations)
    if counts == [PAPER_LABELS]:
        labels = f"All {PAPER_LABELS} statements of the paper are in the label set."
    elif counts:
        labels = (f"**Fewer labels than the paper:** these evaluations score {' / '.join(map(str, counts))} of the "
                  f"paper's {PAPER_LABELS} statements (a smaller store, e.g. the PTB-XL sample, lacks rare ones), "
                  "so the comparison is indicative only.")
    else:
        labels = f"The number of labels is not recorded; the paper's numbers are over {PAPER_LABELS} statements."
    text = (f"Store {shown}: evaluations on the paper's protocol (PTB-XL only, label set `all`, training folds "
            "within 1-8, validation fold 9, test fold 10), in the layout of Mehari & Strodthoff (2022): rows are "
            "the pretraining method, columns the downstream protocol. *Published*: the paper's numbers (mean ± std "
            f"over runs, {PAPER_LABELS} statements). Ours are compared on the reference scale "
            "(`test_macro_auc_reference`: every label of the set, a label the test fold cannot score counted as "
            "0.5), the scale of the published numbers; several evaluations in a cell are averaged. The 'none' row "
            "holds supervised training (fine-tune column) and a linear head on a randomly initialised encoder "
            "(linear column); rows trained on fewer labels have no published counterpart. " + labels)
    if table.fallback:
        text += (f" {FALLBACK_MARK}: no reference-scale AUC in that evaluation; shown on our scale "
                 "(`test_macro_auc`, labels with positives and negatives only), not directly comparable.")
    if table.excluded:
        text += f" {table.excluded} summary(ies) with an unknown mode are left out of this table."
    blocks = [title, text, table.markdown]
    if table.missing_baselines:
        commands = "; ".join(f"{encoder}: `ecg-ray evaluate --config {RANDOM_INIT_LINEAR_JOBS[encoder]} --store "
                             f"{store or 'STORE'} --output DIR`" for encoder in table.missing_baselines)
        blocks.append("**Random-init linear baseline not run** (the yardstick of every pretrained linear result; "
                      f"run without --encoder): {commands}.")
    report.add(*blocks, *_significance_text(table, significance))


def _inputs_of(e: Evaluation) -> str:
    """What the model was shown, when not the paper's 12 leads in sliding windows: ``leads I,II,V1; whole
    records`` (evaluations that differ here are never averaged in one cell)."""
    notes = [f"leads {','.join(leads)}"] if (leads := leads_of(e)) is not None else []
    return "; ".join(notes + (["whole records"] if e.data.get("window") == 0 else []))


def _other_section(report: Report, store: str | None, label_set: str | None, evaluations: list[Evaluation],
                   significance: Significance, inputs: str = "") -> None:
    table = _layout_table(evaluations, significance, paper=False)
    counts = _label_count(evaluations)
    labels = f", {counts[0]} labels" if len(counts) == 1 else (f", {counts[0]}-{counts[-1]} labels" if counts else "")
    label_text = f"label set `{label_set}`" if label_set else "label set unknown"
    labels += f"; {inputs}" if inputs else ""
    if store:
        title = f"## Results on `{report.rel(store)}` ({label_text}{labels})"
        problems = sorted({p for e in evaluations for p in paper_problems(e)})
        text = ("Not on the paper's protocol (" + "; ".join(problems) + "), so no published numbers are set "
                "beside these.")
    else:
        title = f"## Results, store unknown ({label_text}{labels})"
        text = ("These evaluation summaries do not record their store, test data or folds (written before "
                "evaluation.json carried them), so they are not compared with the paper; rerun `ecg-ray evaluate` "
                "to place them.")
    text += (" Test macro AUC on our scale (labels with positives and negatives in the test set); several "
             "evaluations in a cell are averaged. The 'none' row holds supervised training (fine-tune column) and "
             "a linear head on a randomly initialised encoder (linear column).")
    if table.excluded:
        text += f" {table.excluded} summary(ies) with an unknown mode are left out of this table."
    report.add(title, text, table.markdown, *_significance_text(table, significance))


def _summaries(report: Report, evaluations: list[Evaluation]) -> None:
    rows = []
    ordered = sorted(evaluations, key=lambda e: (str(e.data.get("encoder")), method_order(method_of(e)),
                                                 str(e.data.get("mode")), str(e.path)))
    for e in ordered:
        d = e.data
        ci = d.get("test_macro_auc_ci") or [None, None]
        ci = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else [None, None]
        folds = parse_folds(d.get("train_folds"))
        labels = key_text(d.get("labels_scored")) + (f"/{int(d['n_labels'])}" if finite(d.get("n_labels")) else "")
        rows.append([d.get("variant") or "—", d.get("mode"), d.get("method") or "—", d.get("encoder"),
                     f"`{report.rel(_store_of(e))}`" if _store_of(e) else "unknown",
                     folds_label(folds) if folds else "—",
                     fmt_fraction(e.label_fraction) if e.label_fraction is not None else "—",
                     fmt_auc(d.get("val_macro_auc")), fmt_auc_ci(d["test_macro_auc"], *ci),
                     fmt_auc(d.get("test_macro_auc_reference")), labels, key_text(d.get("best_epoch")),
                     f"`{report.rel(e.path.parent)}`"])
    report.add("## Evaluation summaries",
               "Test AUC (ours): mean ROC AUC over the labels with positives and negatives in the test set (and at "
               "least `min_test_positives` positives), with its 95% bootstrap CI. Reference scale: the reference "
               "code's macro AUC over every label of the set, a label it cannot score counted as 0.5 (the scale of "
               "the published numbers). Labels: scored / in the label set.",
               md_table(["variant", "mode", "method", "encoder", "store", "training folds", "label fraction",
                         "val AUC", "test AUC [CI] (ours)", "test AUC (reference scale)", "labels", "best epoch",
                         "run"], rows))
    per_label = {f"{e.data.get('variant') or report.rel(e.path.parent)}": e.data.get("per_label_auc")
                 for e in ordered if isinstance(e.data.get("per_label_auc"), dict)}
    if per_label:
        labels = sorted({label for aucs in per_label.values() for label in aucs})
        label_rows = [[label] + [fmt_auc(aucs.get(label)) for aucs in per_label.values()] for label in labels]
        report.add(f"<details><summary>Per-label test AUC ({len(labels)} labels)</summary>",
                   md_table(["label"] + list(per_label), label_rows), "</details>")


def evaluation_section(report: Report, evaluations: list[Evaluation], significance: Significance) -> None:
    paper: dict[str | None, list[Evaluation]] = defaultdict(list)
    other: dict[tuple[str | None, str | None, str], list[Evaluation]] = defaultdict(list)
    for e in evaluations:
        if paper_problems(e):
            label_set = e.data.get("label_set")
            other[(_store_of(e), None if label_set is None else str(label_set), _inputs_of(e))].append(e)
        else:
            paper[_store_of(e)].append(e)
    if paper:
        for store in sorted(paper, key=str):
            _paper_section(report, store, paper[store], len(paper) > 1, significance)
    else:
        report.add("## Paper comparison (PTB-XL, test macro AUC)",
                   "No evaluation here follows the paper's protocol (PTB-XL only, label set `all`, training folds "
                   "within 1-8, validation fold 9, test fold 10), so nothing is set beside the published numbers; "
                   "the results are in the tables below.")
    # Known stores first (by name), the unknown one last.
    for store, label_set, inputs in sorted(other, key=lambda k: (k[0] is None, str(k[0]), str(k[1]), k[2])):
        _other_section(report, store, label_set, other[(store, label_set, inputs)], significance, inputs)
    lead_subset_section(report, evaluations)
    _summaries(report, evaluations)
