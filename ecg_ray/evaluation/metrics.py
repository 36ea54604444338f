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
