"""Macro AUC on hand-computed examples and the bootstrap confidence interval of it."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.evaluation import metrics
from ecg_ray.evaluation.metrics import bootstrap_macro_auc_ci, macro_auc, roc_auc

# Four records, three labels. Label 0: positives score 0.9, 0.4 against negatives 0.1, 0.6, so
# 3 of 4 pairs are ordered (AUC 0.75). Label 1: positives 0.5, 0.8 against negatives 0.5, 0.2;
# the tied pair counts one half, so (0.5 + 1 + 1 + 1) / 4 = 0.875. Label 2 has no positive.
Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
S = np.array([[0.9, 0.5, 0.3], [0.1, 0.5, 0.2], [0.4, 0.8, 0.9], [0.6, 0.2, 0.1]])


def test_roc_auc_hand_values_and_ties():
    assert roc_auc(Y[:, 0], S[:, 0]) == pytest.approx(0.75)
    assert roc_auc(Y[:, 1], S[:, 1]) == pytest.approx(0.875)
    assert roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)  # all tied
    assert np.isnan(roc_auc(Y[:, 2], S[:, 2]))


def test_macro_auc_skips_and_counts_a_label_without_positives():
    result = macro_auc(Y, S)
    # Scored as 0.5 (the reference's behaviour) the value would be (0.75 + 0.875 + 0.5) / 3.
    assert result.value == pytest.approx((0.75 + 0.875) / 2)
    assert (result.labels_scored, result.labels_skipped) == (2, 1)
    assert result.per_label[:2] == pytest.approx([0.75, 0.875])
    assert np.isnan(result.per_label[2])


def test_macro_auc_skips_a_label_with_only_positives():
    y = Y.copy()
    y[:, 2] = 1
    result = macro_auc(y, S)
    assert (result.labels_scored, result.labels_skipped) == (2, 1)
    assert result.value == pytest.approx(0.8125)


def test_macro_auc_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        macro_auc(Y, S[:, :2])


def _synthetic(n: int, n_labels: int = 8, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.02, 0.4, n_labels)
    y = rng.random((n, n_labels)) < prevalence
    s = rng.normal(size=(n, n_labels)) + 1.2 * y
    if ties:
        s = np.round(s, 1)
    return y, s


def _direct_ci(y, s, n_boot, alpha, seed):
    """The same resamples (same generator calls) scored by re-ranking each one with macro_auc."""
    rng = np.random.default_rng(seed)
    n = len(y)
    values = []
    for start in range(0, n_boot, metrics._BOOT_BLOCK):
        for rows in rng.integers(0, n, size=(min(metrics._BOOT_BLOCK, n_boot - start), n)):
            values.append(macro_auc(y[rows], s[rows]).value)
    values = np.array(values)
    return tuple(np.quantile(values[~np.isnan(values)], [alpha / 2, 1 - alpha / 2]))


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_equals_re_ranking_each_resample(ties):
    # Rare labels make some resamples lose all positives: those labels must be skipped per resample.
    y, s = _synthetic(60, ties=ties)
    y[:, 0] = False
    y[[3, 17], 0] = True
    got = bootstrap_macro_auc_ci(y, s, n_boot=200, alpha=0.1, seed=3)
    assert got == pytest.approx(_direct_ci(y, s, 200, 0.1, 3), abs=1e-12)


def test_bootstrap_contains_estimate_narrows_and_is_deterministic():
    y_small, s_small = _synthetic(150, seed=1)
    y_large, s_large = _synthetic(2000, seed=1)
    lo_s, hi_s = bootstrap_macro_auc_ci(y_small, s_small, n_boot=300, seed=0)
    lo_l, hi_l = bootstrap_macro_auc_ci(y_large, s_large, n_boot=300, seed=0)
    assert lo_s <= macro_auc(y_small, s_small).value <= hi_s
    assert lo_l <= macro_auc(y_large, s_large).value <= hi_l
    assert hi_l - lo_l < 0.6 * (hi_s - lo_s)  # width ~ 1/sqrt(n): about 0.27x here
    assert bootstrap_macro_auc_ci(y_small, s_small, n_boot=300, seed=0) == (lo_s, hi_s)
    assert bootstrap_macro_auc_ci(y_small, s_small, n_boot=300, seed=1) != (lo_s, hi_s)


def test_bootstrap_edge_cases():
    y = np.zeros((10, 2), dtype=bool)
    assert all(np.isnan(bootstrap_macro_auc_ci(y, np.random.default_rng(0).random((10, 2)), n_boot=20)))
    with pytest.raises(ValueError):
        bootstrap_macro_auc_ci(Y, S[:, :2])
    with pytest.raises(ValueError):
        bootstrap_macro_auc_ci(Y, S, alpha=1.5)
