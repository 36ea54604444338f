"""Paired bootstrap comparison of two evaluations on the same test records.

Two overlapping confidence intervals do not show that two models perform alike: both are
scored on the same records, so most of the resampling noise is shared. The paired bootstrap
scores both models on *identical* resamples (same seed, same draws; see
:func:`ecg_ray.evaluation.metrics.resample_count_blocks`) and takes the interval and p-value
of the per-resample difference ``b - a``.

Every resample averages a fixed label set - the labels with at least ``min_test_positives``
positives (and one negative) among the test records - so that both models and all resamples
average the same labels; a label that loses a class in a resample counts 0.5 for both models
(the share is reported; with ``min_test_positives >= 10`` it is practically never hit). The same
difference is also given on the reference's scale (every label, an unscorable one 0.5).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ecg_ray import storage
from ecg_ray.errors import EcgRayError
from ecg_ray.evaluation.metrics import (
    bootstrap_label_aucs,
    macro_auc_reference,
    macro_from_label_aucs,
    roc_auc,
    scorable_labels,
)
from ecg_ray.evaluation.predictions import EVALUATION_FILE, Predictions, find_predictions, load_predictions

# Value of a label with one class in a resample, on both scales (the reference's convention).
UNSCORABLE_AUC = 0.5


class ComparisonError(EcgRayError):
    """Two evaluations cannot be compared: different records, labels or label sets."""


def _examples(ids, limit: int = 3) -> str:
    ids = sorted(ids)
    text = ", ".join(repr(str(i)) for i in ids[:limit])
    return text + (", ..." if len(ids) > limit else "")


def _check_same_labels(a: Predictions, b: Predictions) -> None:
    if a.label_set != b.label_set:
        raise ComparisonError(f"different label sets: a uses {a.label_set!r}, b uses {b.label_set!r}")
    if a.label_names == b.label_names:
        return
    only_a = set(a.label_names) - set(b.label_names)
    only_b = set(b.label_names) - set(a.label_names)
    if not only_a and not only_b:
        raise ComparisonError(f"label set {a.label_set!r}: the same {len(a.label_names)} label names "
                              f"in a different order (a: {a.label_names[:3]}..., b: {b.label_names[:3]}...)")
    raise ComparisonError(f"label set {a.label_set!r}: different label names: a has {len(a.label_names)}, "
                          f"b has {len(b.label_names)}; only in a: {len(only_a)} ({_examples(only_a)}), "
                          f"only in b: {len(only_b)} ({_examples(only_b)})")


def _aligned_rows(a: Predictions, b: Predictions) -> np.ndarray:
    """Row of b for each row of a (b's rows put in a's record order); refuses different record sets."""
    for side, p in (("a", a), ("b", b)):
        unique, counts = np.unique(p.record_ids, return_counts=True)
        if len(unique) != len(p.record_ids):
            raise ComparisonError(f"{side}: {len(p.record_ids) - len(unique)} duplicated record ids "
                                  f"({_examples(unique[counts > 1])}); records cannot be paired")
    ids_a, ids_b = set(a.record_ids.tolist()), set(b.record_ids.tolist())
    if ids_a != ids_b:
        only_a, only_b = ids_a - ids_b, ids_b - ids_a
        raise ComparisonError(f"the evaluations are on different test records: a has {len(ids_a)}, b has "
                              f"{len(ids_b)}; only in a: {len(only_a)} ({_examples(only_a)}), only in b: "
                              f"{len(only_b)} ({_examples(only_b)})")
    row_of_b = {rid: i for i, rid in enumerate(b.record_ids.tolist())}
    return np.array([row_of_b[rid] for rid in a.record_ids.tolist()], dtype=np.intp)


def _p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p: twice the smaller tail share of differences at or beyond 0.

    Each tail is (k + 1) / (n + 1) - a resample count, like a permutation p-value, is never 0 -
    and the result is capped at 1 (identical models: both tails are all resamples).
    """
    n = len(differences)
    low = (np.count_nonzero(differences <= 0) + 1) / (n + 1)
    high = (np.count_nonzero(differences >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(low, high)))


def _scale(values_a: np.ndarray, values_b: np.ndarray, point_a: float, point_b: float, alpha: float) -> dict:
    differences = values_b - values_a
    low, high = np.quantile(differences, [alpha / 2, 1 - alpha / 2])
    p = _p_value(differences)
    return {"macro_auc_a": point_a, "macro_auc_b": point_b, "difference": point_b - point_a,
            "ci": [float(low), float(high)], "p_value": p, "significant": bool(p < alpha)}


def paired_bootstrap(a: Predictions, b: Predictions, n_boot: int = 1000, seed: int = 0,
                     min_test_positives: int = 1, alpha: float = 0.05) -> dict:
    """Difference ``b - a`` in test macro AUC with a paired bootstrap interval and p-value.

    Both models are scored on the same ``n_boot`` resamples of the test records, over the labels
    with ``>= min_test_positives`` positives (``labels_compared``; the rest are
    ``labels_excluded``), and on the reference's scale (every label, unscorable 0.5) under
    ``reference_scale``. Refuses (:class:`ComparisonError`) evaluations on different records,
    label names or label sets, or whose label matrices disagree.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    _check_same_labels(a, b)
    rows = _aligned_rows(a, b)
    y, probs_a, probs_b, labels_b = a.labels, a.probs, b.probs[rows], b.labels[rows]
    if not np.array_equal(y, labels_b):
        bad = np.flatnonzero((y != labels_b).any(axis=1))
        raise ComparisonError(f"the label matrices differ on {len(bad)} of {len(y)} test records "
                              f"({_examples(a.record_ids[bad])}): the evaluations used different labels")
    for side, probs in (("a", probs_a), ("b", probs_b)):
        if not np.isfinite(probs).all():
            raise ComparisonError(f"{side}: {int((~np.isfinite(probs)).sum())} non-finite predicted probabilities")
    compared = scorable_labels(y, min_test_positives) if len(y) else np.zeros(y.shape[1], dtype=bool)
    if not compared.any():
        raise ComparisonError(f"no label has >= {min_test_positives} positives and a negative among the "
                              f"{len(y)} test records; nothing to compare")
    names = np.array(a.label_names, dtype=object)

    # One bootstrap of every label per model; both scales are averages of these same resamples.
    aucs_a = bootstrap_label_aucs(y, probs_a, n_boot=n_boot, seed=seed)
    aucs_b = bootstrap_label_aucs(y, probs_b, n_boot=n_boot, seed=seed)
    fixed_a = macro_from_label_aucs(aucs_a[:, compared], UNSCORABLE_AUC)
    fixed_b = macro_from_label_aucs(aucs_b[:, compared], UNSCORABLE_AUC)
    ref_a = macro_from_label_aucs(aucs_a, UNSCORABLE_AUC)
    ref_b = macro_from_label_aucs(aucs_b, UNSCORABLE_AUC)

    per_label = []
    for j in np.flatnonzero(compared):
        auc_a, auc_b = roc_auc(y[:, j], probs_a[:, j]), roc_auc(y[:, j], probs_b[:, j])
        per_label.append({"label": str(names[j]), "auc_a": auc_a, "auc_b": auc_b, "difference": auc_b - auc_a})
    point_a = float(np.mean([p["auc_a"] for p in per_label]))
    point_b = float(np.mean([p["auc_b"] for p in per_label]))
    fixed = _scale(fixed_a.values, fixed_b.values, point_a, point_b, alpha)
    reference = _scale(ref_a.values, ref_b.values, macro_auc_reference(y, probs_a),
                       macro_auc_reference(y, probs_b), alpha)
    # Which cells lack a class depends on the labels and the draws only, so a and b share it.
    reference.update(labels=int(y.shape[1]), unscorable_share=ref_a.unscorable_share)
    return {
        "records": int(len(y)),
        "labels_compared": names[compared].tolist(),
        "labels_excluded": names[~compared].tolist(),
        "min_test_positives": int(min_test_positives),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "alpha": float(alpha),
        **fixed,
        "unscorable_share": fixed_a.unscorable_share,
        "reference_scale": reference,
        "per_label": per_label,
        "a": {"source": None, "variant": None},
        "b": {"source": None, "variant": None},
    }


def _variant(predictions_location: str) -> tuple[str | None, str | None]:
    """``(evaluation.json location, variant)`` beside a predictions file, each None when unknown."""
    summary = storage.join(storage.parent(predictions_location), EVALUATION_FILE)
    if not storage.is_file(summary):
        return None, None
    try:
        variant = json.loads(storage.read_text(summary)).get("variant")
    except (ValueError, AttributeError, EcgRayError):
        return summary, None  # the predictions are what is compared; a bad summary only loses the name
    return summary, (str(variant) if variant is not None else None)


def compare_evaluations(source_a: str | os.PathLike, source_b: str | os.PathLike, n_boot: int = 1000,
                        seed: int = 0, min_test_positives: int = 1, alpha: float = 0.05) -> dict:
    """:func:`paired_bootstrap` of two evaluations given as run directories, ``evaluation.json`` or ``.npz``.

    ``a``/``b`` in the result name the predictions file, the ``evaluation.json`` beside it and its
    ``variant`` (None when there is no summary).
    """
    sides = {}
    for side, source in (("a", source_a), ("b", source_b)):
        location = find_predictions(source)
        summary, variant = _variant(location)
        sides[side] = (load_predictions(location), {"source": location, "evaluation": summary, "variant": variant})
    result = paired_bootstrap(sides["a"][0], sides["b"][0], n_boot=n_boot, seed=seed,
                              min_test_positives=min_test_positives, alpha=alpha)
    result["a"], result["b"] = sides["a"][1], sides["b"][1]
    return result


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def format_comparison(result: dict) -> str:
    """A text report of :func:`paired_bootstrap` / :func:`compare_evaluations` for the terminal."""
    level = 1 - float(result.get("alpha", 0.05))
    lines = [f"Paired bootstrap: {result['n_boot']} resamples (seed {result['seed']}) of "
             f"{result['records']} test records"]
    for side in ("a", "b"):
        info = result.get(side) or {}
        name = info.get("variant") or "(unnamed)"
        lines.append(f"  {side}: {name}" + (f"  [{info['source']}]" if info.get("source") else ""))
    ref = result["reference_scale"]
    rows = [(f"labels >= {result.get('min_test_positives', 1)} positives ({len(result['labels_compared'])})", result),
            (f"reference: all {ref.get('labels', '?')}, unscorable 0.5", ref)]
    width = max(len(r[0]) for r in rows)
    ci_head = f"{level:.0%} CI of b - a"
    lines += ["", f"  {'macro AUC on':<{width}}  {'a':>6}  {'b':>6}  {'b - a':>8}  {ci_head:<20}  {'p':>6}"]
    for label, scale in rows:
        low, high = scale["ci"]
        mark = " *" if scale["significant"] else ""
        lines.append(f"  {label:<{width}}  {scale['macro_auc_a']:6.4f}  {scale['macro_auc_b']:6.4f}  "
                     f"{_signed(scale['difference']):>8}  {f'[{_signed(low)}, {_signed(high)}]':<20}  "
                     f"{scale['p_value']:6.4f}{mark}")
    lines.append(f"  (* p < {1 - level:g}; a label with one class in a resample counts 0.5: "
                 f"{result.get('unscorable_share', 0.0):.2%} of label-resamples compared, "
                 f"{ref.get('unscorable_share', 0.0):.2%} on the reference scale)")
    excluded = result["labels_excluded"]
    if excluded:
        shown = ", ".join(excluded[:12]) + (f", ... ({len(excluded)} in all)" if len(excluded) > 12 else "")
        lines.append(f"  excluded labels: {shown}")
    per_label = sorted(result["per_label"], key=lambda r: r["difference"], reverse=True)
    if per_label:
        width = max(12, *(len(r["label"]) for r in per_label))
        lines += ["", f"  {'label':<{width}}  {'a':>6}  {'b':>6}  {'b - a':>8}"]
        lines += [f"  {r['label']:<{width}}  {r['auc_a']:6.4f}  {r['auc_b']:6.4f}  {_signed(r['difference']):>8}"
                  for r in per_label]
    return "\n".join(lines)
