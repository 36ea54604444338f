"""Per-record aggregation of window outputs, as in the paper's evaluation protocol.

A 10 s record is evaluated as sliding windows (250 samples, stride 125 at 100 Hz: 7 windows);
the model's sigmoid outputs of a record's windows are averaged into one score per label, and the
macro AUC is computed over records, not windows. Averaging probabilities (not logits) is what
Mehari & Strodthoff (2022) and the PTB-XL benchmark do, so it is kept for comparability.
"""

from __future__ import annotations

import numpy as np


def average_per_record(record_index: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the window scores of each record.

    ``record_index`` (n_windows,) names the record of each window (any integer ids, any order);
    ``scores`` (n_windows, L) are the window outputs (sigmoid probabilities). Returns the sorted
    unique record ids (n_records,) and their mean scores (n_records, L) in float64, row ``k``
    belonging to ``records[k]``.
    """
    record_index = np.asarray(record_index)
    scores = np.asarray(scores)
    if record_index.ndim != 1:
        raise ValueError(f"record_index must be 1-D, got shape {record_index.shape}")
    if scores.ndim != 2 or len(scores) != len(record_index):
        raise ValueError(f"scores must be (n_windows={len(record_index)}, L), got shape {scores.shape}")
    records, inverse = np.unique(record_index, return_inverse=True)
    if len(records) == 0:
        return records, np.zeros((0, scores.shape[1]))
    # Group the windows by record with a stable sort, then sum each contiguous group in one
    # reduceat: faster than np.add.at and summed in the windows' original order.
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(records))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    sums = np.add.reduceat(scores[order].astype(np.float64), starts, axis=0)
    return records, sums / counts[:, None]
