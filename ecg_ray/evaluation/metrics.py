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


def _label_plan(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None,
                                                     bool] | None:
    """Per-label precomputation shared by every resample; None if the label has one class only.

    The Mann-Whitney count is computed against the *smaller* class (``small``, sorted by score):
    for each record of the larger class, ``lo``/``hi`` are the numbers of small-class records
    scoring strictly below / at most its score. In a resample with draw counts ``c`` and
    ``cum`` the cumulative counts of the sorted small class, a large-class record contributes
    ``c * (cum[lo] + cum[hi]) / 2`` pairs (ties count one half, exactly). Sorting and summing
    only the smaller class keeps the per-resample cumulative sum short for rare labels.
    ``hi`` is None when no score is tied across the classes (then it equals ``lo``), and the
    flag says whether the large class is the positives (else the count is of reversed pairs).
    """
    pos = np.flatnonzero(y)
    neg = np.flatnonzero(~y)
    if len(pos) == 0 or len(neg) == 0:
        return None
    large_is_pos = len(pos) >= len(neg)
    small, large = (neg, pos) if large_is_pos else (pos, neg)
    small = small[np.argsort(s[small], kind="stable")]
    small_scores = s[small]
    lo = np.searchsorted(small_scores, s[large], side="left")
    hi = np.searchsorted(small_scores, s[large], side="right")
    return small, large, lo, (None if np.array_equal(lo, hi) else hi), large_is_pos


def bootstrap_macro_auc_ci(y_true: np.ndarray, y_score: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                           seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the macro AUC, resampling records (rows) with replacement.

    Each resample draws ``n`` rows with replacement; its macro AUC averages the labels that have
    positives and negatives *in that resample* (others are skipped, as in :func:`macro_auc`).
    The interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of the resampled values.
    Deterministic for a seed.

    Why it is fast: a resample is represented by how often each record was drawn, and the AUC of
    a weighted sample only needs, for each record of one class, the drawn records of the other
    class scoring below it. With the smaller class sorted once per label that is one cumulative
    sum over that class and one gather per resample and label, done for a block of resamples at
    a time as contiguous row operations (no re-ranking of any resample).
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
    # Counts never exceed n, so the smallest integer type holding n keeps the gathers cheap; a
    # record's pair count c * (cum[lo] + cum[hi]) is at most n**2 / 2, which int32 holds here.
    count_dtype, pair_dtype = (np.int16, np.int32) if n < 2**15 else (np.int32, np.int64)
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
        for small, large, lo, hi, large_is_pos in plans:
            cum = np.zeros((len(small) + 1, b), dtype=np.int32)
            np.cumsum(counts[small], axis=0, out=cum[1:])
            large_counts = counts[large]
            below = cum[lo] if hi is None else cum[lo] + cum[hi]
            # Twice the pair count (large above small; ties one half), exact in int64.
            pairs2 = np.multiply(large_counts, below, dtype=pair_dtype).sum(axis=0, dtype=np.int64)
            pairs2 *= 2 if hi is None else 1
            n_small = cum[-1].astype(np.int64)
            n_large = large_counts.sum(axis=0, dtype=np.int64)
            u2 = pairs2 if large_is_pos else 2 * n_small * n_large - pairs2
            ok = (n_small > 0) & (n_large > 0)
            auc_sum[ok] += u2[ok] / (2.0 * n_small[ok] * n_large[ok])
            auc_count += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            values[start:start + b] = auc_sum / auc_count
    values = values[~np.isnan(values)]  # a resample with no scorable label has no macro AUC
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
