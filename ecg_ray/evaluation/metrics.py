"""Macro ROC-AUC over labels, computed exactly from ranks (ties get average ranks), on two scales.

Our scale (:func:`macro_auc`): a label without both positives and negatives in the evaluated set
cannot be scored, so it is skipped and counted. The reference's scale
(:func:`macro_auc_reference`): every label is averaged and an unscorable one counts 0.5, which the
reference did silently; reported beside ours so that numbers compare with the published ones.

Bootstrap intervals resample records. By default a resample averages the labels scorable in
*that* resample (the original behaviour); over a fixed label set (``labels=`` and/or
``unscorable=``) every resample averages exactly the same labels and a label that has one class
in a resample counts ``unscorable`` (0.5), how often that happened being reported. With labels
filtered to >= 10 test positives (``min_test_positives``) a resample misses all positives of a
label with probability about ``exp(-10)`` per label, so the 0.5 is practically never used there.
"""

from __future__ import annotations

from collections.abc import Iterator
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


def _check_pair(y_true: np.ndarray, y_score: np.ndarray) -> None:
    if y_true.shape != y_score.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must be equal 2-D shapes")


def macro_auc(y_true: np.ndarray, y_score: np.ndarray) -> MacroAUC:
    """Mean ROC-AUC over the labels (columns) that have positives and negatives."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    _check_pair(y_true, y_score)
    per_label = [roc_auc(y_true[:, j], y_score[:, j]) for j in range(y_true.shape[1])]
    scored = [a for a in per_label if not np.isnan(a)]
    value = float(np.mean(scored)) if scored else float("nan")
    return MacroAUC(value, len(scored), len(per_label) - len(scored), per_label)


def macro_auc_reference(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean ROC-AUC over *every* label, a label with one class counting 0.5 (the reference's scale).

    NaN only when there are no labels at all.
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    _check_pair(y_true, y_score)
    if y_true.shape[1] == 0:
        return float("nan")
    per_label = [roc_auc(y_true[:, j], y_score[:, j]) for j in range(y_true.shape[1])]
    return float(np.mean([0.5 if np.isnan(a) else a for a in per_label]))


def scorable_labels(y_true: np.ndarray, min_positives: int = 1) -> np.ndarray:
    """Boolean mask of the labels with at least ``min_positives`` positives and one negative."""
    y_true = np.asarray(y_true)
    if y_true.ndim != 2:
        raise ValueError(f"y_true must be 2-D (records, labels), got shape {y_true.shape}")
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1 (a label without positives has no AUC), got {min_positives}")
    positives = y_true.astype(bool).sum(axis=0)
    return (positives >= min_positives) & (positives < y_true.shape[0])


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


def resample_count_blocks(n: int, n_boot: int, seed: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """The bootstrap resamples as ``(first boot, counts)`` blocks; ``counts[i, k]``: draws of record i.

    The draw procedure every bootstrap here uses: ``rng = np.random.default_rng(seed)``, then for
    each block of up to 128 boots ``rng.integers(0, n, size=(boots in block, n))`` - one row of
    ``n`` record indices drawn with replacement per resample. The resamples therefore depend only
    on ``(n, n_boot, seed)``, never on the scores: two models scored with the same seed are
    evaluated on identical resamples (a paired bootstrap). Counts are laid out (records, boots)
    so that gathering a class's records copies contiguous rows.
    """
    # Counts never exceed n, so the smallest integer type holding n keeps the gathers cheap.
    count_dtype = np.int16 if n < 2**15 else np.int32
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _BOOT_BLOCK):
        b = min(_BOOT_BLOCK, n_boot - start)
        draws = rng.integers(0, n, size=(b, n))
        counts = np.bincount((draws + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n)
        yield start, np.ascontiguousarray(counts.reshape(b, n).T.astype(count_dtype))


def _plan_aucs(plan, counts: np.ndarray, n: int) -> np.ndarray:
    """One label's AUC in each resample of a counts block (NaN where a class was not drawn)."""
    small, large, lo, hi, large_is_pos = plan
    b = counts.shape[1]
    # A record's pair count c * (cum[lo] + cum[hi]) is at most n**2 / 2 (c + cum <= n), which
    # int32 holds for n < 2**15; larger sets accumulate in int64.
    pair_dtype = np.int32 if n < 2**15 else np.int64
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
    aucs = np.full(b, np.nan)
    aucs[ok] = u2[ok] / (2.0 * n_small[ok] * n_large[ok])
    return aucs


def _label_indices(labels: np.ndarray | None, n_labels: int) -> np.ndarray:
    """Column indices from a boolean mask or an index array (None: every label)."""
    if labels is None:
        return np.arange(n_labels)
    labels = np.asarray(labels)
    if labels.dtype == bool:
        if labels.shape != (n_labels,):
            raise ValueError(f"a boolean label mask needs {n_labels} entries, got shape {labels.shape}")
        return np.flatnonzero(labels)
    if labels.size == 0:
        return np.zeros(0, dtype=np.intp)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a boolean mask or a 1-D array of label indices, got {labels!r}")
    if labels.min() < 0 or labels.max() >= n_labels:
        raise ValueError(f"label indices must lie in [0, {n_labels}), got {labels.tolist()}")
    return labels.astype(np.intp)


def _check_bootstrap_args(y_true, y_score, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    _check_pair(y_true, y_score)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return y_true.astype(bool), y_score


def bootstrap_label_aucs(y_true: np.ndarray, y_score: np.ndarray, n_boot: int = 1000, seed: int = 0,
                         labels: np.ndarray | None = None) -> np.ndarray:
    """Each label's AUC in each resample: shape ``(n_boot, number of labels)``, NaN where one class.

    ``labels`` (boolean mask or index array; None: every label) selects and orders the columns.
    Resamples follow :func:`resample_count_blocks`, so the same ``seed`` gives the same resamples
    for any score matrix of the same number of records.

    Why it is fast: a resample is represented by how often each record was drawn, and the AUC of
    a weighted sample only needs, for each record of one class, the drawn records of the other
    class scoring below it. With the smaller class sorted once per label that is one cumulative
    sum over that class and one gather per resample and label, done for a block of resamples at
    a time as contiguous row operations (no re-ranking of any resample).
    """
    y_bool, y_score = _check_bootstrap_args(y_true, y_score, n_boot)
    n = y_bool.shape[0]
    columns = _label_indices(labels, y_bool.shape[1])
    out = np.full((n_boot, len(columns)), np.nan)
    plans = [(k, _label_plan(y_bool[:, j], y_score[:, j])) for k, j in enumerate(columns)]
    plans = [(k, p) for k, p in plans if p is not None]  # one class overall: NaN in every resample
    if n == 0 or not plans:
        return out
    for start, counts in resample_count_blocks(n, n_boot, seed):
        for k, plan in plans:
            out[start:start + counts.shape[1], k] = _plan_aucs(plan, counts, n)
    return out


@dataclass
class BootstrapValues:
    """Macro AUC of each resample and how often a label of the set had one class in a resample.

    ``values`` has one entry per resample (NaN where nothing could be averaged);
    ``unscorable_share`` is the share of (resample, label) cells of the label set in which the
    label had one class - counted as the ``unscorable`` value over a fixed set, skipped otherwise.
    """

    values: np.ndarray
    unscorable_share: float
    n_labels: int


def macro_from_label_aucs(label_aucs: np.ndarray, unscorable: float | None = None) -> BootstrapValues:
    """Per-resample macro AUC from :func:`bootstrap_label_aucs` output.

    ``unscorable`` None: average the labels scorable in each resample (skip the others); a number:
    average every column, a NaN cell counting that number (the fixed-label-set scale).
    """
    label_aucs = np.asarray(label_aucs, dtype=np.float64)
    if label_aucs.ndim != 2:
        raise ValueError(f"label_aucs must be 2-D (resamples, labels), got shape {label_aucs.shape}")
    missing = np.isnan(label_aucs)
    share = float(missing.mean()) if missing.size else 0.0
    if unscorable is not None:
        total = np.where(missing, float(unscorable), label_aucs).sum(axis=1)
        count = np.full(label_aucs.shape[0], label_aucs.shape[1])
    else:
        total = np.where(missing, 0.0, label_aucs).sum(axis=1)
        count = (~missing).sum(axis=1)
    # Nothing to average (no labels, or none scorable in a resample when skipping): NaN.
    values = np.full(label_aucs.shape[0], np.nan)
    np.divide(total, count, out=values, where=count > 0)
    return BootstrapValues(values, share, label_aucs.shape[1])


def bootstrap_macro_auc_values(y_true: np.ndarray, y_score: np.ndarray, n_boot: int = 1000, seed: int = 0,
                               labels: np.ndarray | None = None,
                               unscorable: float | None = None) -> BootstrapValues:
    """The bootstrap distribution of the macro AUC: one value per resample, shape ``(n_boot,)``.

    Default (``labels`` and ``unscorable`` None): each resample averages the labels with positives
    and negatives in that resample, as :func:`macro_auc` does. Fixed label set: with ``labels``
    (boolean mask or index array) every resample averages exactly those labels, and a label with
    one class in a resample counts ``unscorable`` (0.5 unless given); ``unscorable`` alone fixes
    the set to every label (the reference's scale: ``unscorable=0.5``). Same ``seed``, same
    resamples, whatever the scores (see :func:`resample_count_blocks`).
    """
    fixed = labels is not None or unscorable is not None
    label_aucs = bootstrap_label_aucs(y_true, y_score, n_boot=n_boot, seed=seed, labels=labels)
    return macro_from_label_aucs(label_aucs, (0.5 if unscorable is None else unscorable) if fixed else None)


@dataclass
class BootstrapInterval:
    """Percentile interval with the share of (resample, label) cells that had one class."""

    low: float
    high: float
    unscorable_share: float
    n_labels: int


def bootstrap_macro_auc_interval(y_true: np.ndarray, y_score: np.ndarray, n_boot: int = 1000,
                                 alpha: float = 0.05, seed: int = 0, labels: np.ndarray | None = None,
                                 unscorable: float | None = None) -> BootstrapInterval:
    """:func:`bootstrap_macro_auc_ci` that also says how often an unscorable label was met."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    boot = bootstrap_macro_auc_values(y_true, y_score, n_boot=n_boot, seed=seed, labels=labels,
                                      unscorable=unscorable)
    return percentile_interval(boot, alpha)


def percentile_interval(boot: BootstrapValues, alpha: float = 0.05) -> BootstrapInterval:
    """The ``alpha/2`` and ``1 - alpha/2`` quantiles of a bootstrap distribution (NaN resamples dropped)."""
    values = boot.values[~np.isnan(boot.values)]  # a resample with no scorable label has no macro AUC
    if len(values) == 0:
        return BootstrapInterval(float("nan"), float("nan"), boot.unscorable_share, boot.n_labels)
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return BootstrapInterval(float(low), float(high), boot.unscorable_share, boot.n_labels)


def bootstrap_macro_auc_ci(y_true: np.ndarray, y_score: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                           seed: int = 0, labels: np.ndarray | None = None,
                           unscorable: float | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the macro AUC, resampling records (rows) with replacement.

    Each resample draws ``n`` rows with replacement (:func:`resample_count_blocks`); its macro AUC
    averages the labels that have positives and negatives *in that resample* (others are skipped,
    as in :func:`macro_auc`), or a fixed label set when ``labels``/``unscorable`` are given (see
    :func:`bootstrap_macro_auc_values`). The interval is the ``alpha/2`` and ``1 - alpha/2``
    quantiles of the resampled values. Deterministic for a seed.
    """
    interval = bootstrap_macro_auc_interval(y_true, y_score, n_boot=n_boot, alpha=alpha, seed=seed,
                                            labels=labels, unscorable=unscorable)
    return interval.low, interval.high
