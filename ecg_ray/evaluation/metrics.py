"""Macro ROC-AUC over labels, computed exactly from ranks (ties get average ranks).

A label without both positives and negatives in the evaluated set cannot be scored: it is
skipped and counted, never scored as 0.5 (which the reference did silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC-AUC of one label via the Mann-Whitney U statistic; NaN if only one class is present."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos = int(y_true.sum())
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(y_score)
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class MacroAUC:
    """Macro AUC with the labels scored, the labels skipped and each label's AUC."""

    value: float
    labels_scored: int
    labels_skipped: int
    per_label: list[float] = field(default_factory=list)


def macro_auc(y_true: np.ndarray, y_score: np.ndarray) -> MacroAUC:
    """Mean ROC-AUC over the labels (columns) that have positives and negatives."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must be equal 2-D shapes")
    per_label = [roc_auc(y_true[:, j], y_score[:, j]) for j in range(y_true.shape[1])]
    scored = [a for a in per_label if not np.isnan(a)]
    value = float(np.mean(scored)) if scored else float("nan")
    return MacroAUC(value, len(scored), len(per_label) - len(scored), per_label)


# Boots are processed in blocks of this many so that one label's (records x block) count matrix
# stays in cache; the block size is fixed so the draws (and the interval) depend only on the seed.
_BOOT_BLOCK = 128


def _label_plan(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-label precomputation shared by every resample; None if the label has one class only.

    Returns the negatives' record indices sorted by score, the positives' record indices, and for
    each positive the number of negatives scoring strictly below it (``lo``) and at most equal to
    it (``hi``): in a resample its Mann-Whitney contribution is its count times the resampled
    negatives below it plus half those tied with it, i.e. ``(cum[lo] + cum[hi]) / 2`` where
    ``cum`` is the cumulative count of the sorted negatives. Ties are thus handled exactly.
    """
    pos = np.flatnonzero(y)
    neg = np.flatnonzero(~y)
    if len(pos) == 0 or len(neg) == 0:
        return None
    neg = neg[np.argsort(s[neg], kind="stable")]
    neg_scores = s[neg]
    lo = np.searchsorted(neg_scores, s[pos], side="left")
    hi = np.searchsorted(neg_scores, s[pos], side="right")
    return neg, pos, lo, hi


def bootstrap_macro_auc_ci(y_true: np.ndarray, y_score: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                           seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the macro AUC, resampling records (rows) with replacement.

    Each resample draws ``n`` rows with replacement; its macro AUC averages the labels that have
    positives and negatives *in that resample* (others are skipped, as in :func:`macro_auc`).
    The interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled values.
    Deterministic for a seed.

    Why it is fast: a resample is represented by how often each record was drawn, and the AUC of
    a weighted sample only needs, for each positive, the drawn negatives scoring below it. With
    the negatives sorted once per label that is one cumulative sum over records per resample and
    label, done for a block of resamples at a time as contiguous row operations (no re-ranking).
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must be equal 2-D shapes")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n, n_labels = y_true.shape
    y_bool = y_true.astype(bool)
    plans = [p for p in (_label_plan(y_bool[:, j], y_score[:, j]) for j in range(n_labels)) if p is not None]
    if n == 0 or not plans:
        return float("nan"), float("nan")
    # Counts never exceed n, so the smallest integer type holding n keeps the gathers cheap.
    count_dtype = np.int16 if n < 2**15 else np.int32
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_BLOCK):
        b = min(_BOOT_BLOCK, n_boot - start)
        draws = rng.integers(0, n, size=(b, n))
        # Per-record draw counts, laid out (records, boots) so that gathering records copies rows.
        counts = np.bincount((draws + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n)
        counts = np.ascontiguousarray(counts.reshape(b, n).T.astype(count_dtype))
        auc_sum = np.zeros(b)
        auc_count = np.zeros(b)
        for neg, pos, lo, hi in plans:
            cum = np.zeros((len(neg) + 1, b), dtype=np.int32)
            np.cumsum(counts[neg], axis=0, out=cum[1:])
            pos_counts = counts[pos]
            # Twice the Mann-Whitney U (tied pairs count one half), exact in int64.
            u2 = (pos_counts * (cum[lo] + cum[hi]).astype(np.int64)).sum(axis=0)
            n_pos = pos_counts.sum(axis=0, dtype=np.int64)
            n_neg = cum[-1].astype(np.int64)
            ok = (n_pos > 0) & (n_neg > 0)
            auc_sum[ok] += u2[ok] / (2.0 * n_pos[ok] * n_neg[ok])
            auc_count += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            values[start:start + b] = auc_sum / auc_count
    values = values[~np.isnan(values)]  # a resample with no scorable label has no macro AUC
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
