"""Both macro AUC scales, the scorable-label filter and the fixed-label-set bootstrap against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.evaluation.metrics import (
    bootstrap_label_aucs,
    bootstrap_macro_auc_ci,
    bootstrap_macro_auc_interval,
    bootstrap_macro_auc_values,
    macro_auc,
    macro_auc_reference,
    macro_from_label_aucs,
    scorable_labels,
)

# The example of test_metrics.py: label 0 has AUC 0.75, label 1 (one tied pair) 0.875, label 2
# has no positive.
Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
S = np.array([[0.9, 0.5, 0.3], [0.1, 0.5, 0.2], [0.4, 0.8, 0.9], [0.6, 0.2, 0.1]])


def brute_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """AUC by comparing every positive with every negative (ties one half); None with one class."""
    pos, neg = s[y.astype(bool)], s[~y.astype(bool)]
    if len(pos) == 0 or len(neg) == 0:
        return None
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def documented_draws(n: int, n_boot: int, seed: int) -> list[np.ndarray]:
    """The resamples as resample_count_blocks documents them: blocks of 128 rows of n indices."""
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    for start in range(0, n_boot, 128):
        rows.extend(rng.integers(0, n, size=(min(128, n_boot - start), n)))
    return rows


def brute_macro(y, s, rows, labels, unscorable):
    """Per-resample macro AUC and the number of one-class (resample, label) cells, by brute force."""
    values, missing = [], 0
    for r in rows:
        aucs = []
        for j in labels:
            auc = brute_auc(y[r, j], s[r, j])
            if auc is None:
                missing += 1
                if unscorable is None:
                    continue
                auc = unscorable
            aucs.append(auc)
        values.append(np.mean(aucs) if aucs else np.nan)
    return np.array(values), missing / (len(rows) * len(labels))


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five labels: a rare one (2 positives, often lost in a resample), a label without positives,
    and three common ones; scores rounded to one decimal so that ties across classes occur."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, 5)) < np.array([0.0, 0.0, 0.2, 0.35, 0.5])
    y[[4, 11], 0] = True
    s = np.round(rng.normal(size=(n, 5)) + 1.0 * y, 1)
    return y, s


def test_reference_scale_counts_an_unscorable_label_as_one_half():
    assert macro_auc_reference(Y, S) == pytest.approx((0.75 + 0.875 + 0.5) / 3)
    assert macro_auc(Y, S).value == pytest.approx((0.75 + 0.875) / 2)  # our scale skips it
    y = Y.copy()
    y[:, 2] = 1  # only positives: unscorable too
    assert macro_auc_reference(y, S) == pytest.approx((0.75 + 0.875 + 0.5) / 3)
    assert macro_auc_reference(Y[:, :2], S[:, :2]) == pytest.approx((0.75 + 0.875) / 2)
    assert np.isnan(macro_auc_reference(np.zeros((4, 0)), np.zeros((4, 0))))
    with pytest.raises(ValueError):
        macro_auc_reference(Y, S[:, :2])


def test_scorable_labels_with_min_positives():
    # Five records; positives per label 0, 1, 3, 5 (no negative), 4.
    y = np.zeros((5, 5), dtype=np.uint8)
    y[:1, 1] = 1
    y[:3, 2] = 1
    y[:, 3] = 1
    y[:4, 4] = 1
    assert scorable_labels(y).tolist() == [False, True, True, False, True]
    assert scorable_labels(y, min_positives=3).tolist() == [False, False, True, False, True]
    assert scorable_labels(y, min_positives=4).tolist() == [False, False, False, False, True]
    assert scorable_labels(y, min_positives=5).tolist() == [False] * 5
    with pytest.raises(ValueError):
        scorable_labels(y, min_positives=0)
    with pytest.raises(ValueError):
        scorable_labels(y[:, 0])


def test_macro_from_label_aucs_hand_values():
    aucs = np.array([[0.6, np.nan], [np.nan, np.nan], [0.8, 0.7]])
    skip = macro_from_label_aucs(aucs)
    assert skip.values[0] == pytest.approx(0.6)
    assert np.isnan(skip.values[1])
    assert skip.values[2] == pytest.approx(0.75)
    fixed = macro_from_label_aucs(aucs, unscorable=0.5)
    assert fixed.values.tolist() == pytest.approx([0.55, 0.5, 0.75])
    assert fixed.unscorable_share == pytest.approx(3 / 6) == skip.unscorable_share
    assert fixed.n_labels == 2


@pytest.mark.parametrize("labels", [[0, 2, 3], np.array([True, False, True, True, False])])
def test_fixed_label_bootstrap_equals_brute_force(labels):
    # 300 resamples cross the 128-resample block boundary; 40 records make label 0 (2 positives)
    # lose its positives in about 13% of resamples: those must count 0.5, not be skipped.
    y, s = synthetic(40)
    got = bootstrap_macro_auc_values(y, s, n_boot=300, seed=7, labels=labels)
    want, share = brute_macro(y, s, documented_draws(40, 300, 7), [0, 2, 3], unscorable=0.5)
    assert got.values == pytest.approx(want, abs=1e-12)
    assert got.unscorable_share == pytest.approx(share)
    assert 0.02 < share < 0.1  # the 0.5 case is really exercised
    assert got.n_labels == 3
    assert bootstrap_macro_auc_ci(y, s, n_boot=300, seed=7, alpha=0.1, labels=labels) == \
        pytest.approx(tuple(np.quantile(want, [0.05, 0.95])), abs=1e-12)


def test_reference_scale_bootstrap_and_default_skipping_equal_brute_force():
    y, s = synthetic(40, seed=1)
    rows = documented_draws(40, 200, 3)
    # unscorable alone fixes the set to every label, including label 1 that has no positive at all.
    ref = bootstrap_macro_auc_values(y, s, n_boot=200, seed=3, unscorable=0.5)
    want, share = brute_macro(y, s, rows, range(5), unscorable=0.5)
    assert ref.values == pytest.approx(want, abs=1e-12)
    assert ref.unscorable_share == pytest.approx(share)
    assert share > 0.2  # label 1 alone is a fifth of the cells
    # A different fill value for the fixed set.
    zero = bootstrap_macro_auc_values(y, s, n_boot=200, seed=3, labels=[0, 1], unscorable=0.0)
    assert zero.values == pytest.approx(brute_macro(y, s, rows, [0, 1], unscorable=0.0)[0], abs=1e-12)
    # Default: each resample averages the labels scorable in it (the original behaviour).
    skip = bootstrap_macro_auc_values(y, s, n_boot=200, seed=3)
    want_skip, share_skip = brute_macro(y, s, rows, range(5), unscorable=None)
    assert skip.values == pytest.approx(want_skip, abs=1e-12)
    assert skip.unscorable_share == pytest.approx(share_skip)
    assert bootstrap_macro_auc_ci(y, s, n_boot=200, seed=3) == \
        pytest.approx(tuple(np.quantile(want_skip, [0.025, 0.975])), abs=1e-12)


def test_same_seed_same_resamples_for_different_scores():
    y, s = synthetic(60, seed=2)
    base = bootstrap_label_aucs(y, s, n_boot=150, seed=5)
    # A monotone transform ranks identically, so on the same resamples every cell is equal.
    assert bootstrap_label_aucs(y, 3 * s + 1, n_boot=150, seed=5) == pytest.approx(base, abs=1e-12, nan_ok=True)
    # Reversed scores give 1 - AUC in every resample (ties stay ties); a new seed draws anew.
    flipped = bootstrap_label_aucs(y, -s, n_boot=150, seed=5)
    assert flipped == pytest.approx(1 - base, abs=1e-12, nan_ok=True)
    other = bootstrap_label_aucs(y, s, n_boot=150, seed=6)
    assert not np.allclose(np.nan_to_num(other), np.nan_to_num(base))
    # Column selection and order follow the labels argument.
    assert bootstrap_label_aucs(y, s, n_boot=150, seed=5, labels=[3, 0]) == \
        pytest.approx(base[:, [3, 0]], abs=1e-12, nan_ok=True)
    assert np.isnan(base[:, 1]).all()  # no positives: never scorable


def test_interval_reports_unscorable_share_and_is_nan_without_labels():
    y, s = synthetic(40)
    interval = bootstrap_macro_auc_interval(y, s, n_boot=300, seed=7, labels=[0, 2, 3])
    values = bootstrap_macro_auc_values(y, s, n_boot=300, seed=7, labels=[0, 2, 3])
    assert (interval.low, interval.high) == pytest.approx(tuple(np.quantile(values.values, [0.025, 0.975])))
    assert interval.unscorable_share == values.unscorable_share > 0
    empty = bootstrap_macro_auc_interval(y, s, n_boot=20, labels=np.zeros(5, dtype=bool))
    assert np.isnan(empty.low) and np.isnan(empty.high) and empty.n_labels == 0


def test_label_argument_validation():
    y, s = synthetic(20)
    for bad in ([5], [-1], np.ones(4, dtype=bool), [[0, 1]], [0.5]):
        with pytest.raises(ValueError):
            bootstrap_macro_auc_values(y, s, n_boot=5, labels=bad)
    with pytest.raises(ValueError):
        bootstrap_label_aucs(y, s, n_boot=0)
