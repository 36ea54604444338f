"""Evaluation windows: the one place that cuts the sliding windows of whole records (numpy only, no Ray).

The paper scores a record by the average of its sliding windows' outputs (2.5 s windows with a
1.25 s stride: 250 / 125 samples at 100 Hz, 7 windows of a 10 s record). Every reader of
evaluation windows cuts them here:

* downstream evaluation and the noise evaluation (``ecg_ray.evaluation.scoring.predict_records``),
* the online probe's validation records (``ecg_ray.evaluation.probe``),
* the Ray Data stream of windows (``ecg_ray.data.stream.eval_windows``, one read task at a time).

Window ``k`` of a record starts at sample ``k * stride``; a record has ``(length - window) // stride + 1``
of them, and none if it is shorter than ``window`` (such a record is left out, not padded). Each
window carries the store index of its record (``record_index``, the id that per-record averaging
groups by) and its position among its record's windows (``window_index``, which also numbers the
noise draws of :func:`ecg_ray.evaluation.noise.add_noise`).

Whole records (``data.window: 0``, for encoders that accept any length) are one window per record
(``window_index`` 0). Records of different lengths cannot share a batch tensor, so
:func:`whole_record_batches` groups them by exact length, each batch holding at most
``max_samples`` samples per lead: a store of 10 s records (PTB-XL) is one group, batched like
sliding windows; a store of many distinct lengths runs up to one forward pass per length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ecg_ray.data.cutting import LEADS, cut
from ecg_ray.errors import ConfigError


@dataclass(frozen=True)
class Windows:
    """Sliding windows of some records, in record order and, within a record, in start order."""

    #: (n, leads, window) float32
    signal: np.ndarray
    #: (n,) int64: the store index of the record each window was cut from
    record_index: np.ndarray
    #: (n,) int64: the window's position among its record's windows (it starts at window_index * stride)
    window_index: np.ndarray

    def __len__(self) -> int:
        return len(self.record_index)


def window_counts(lengths: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Number of sliding windows of each record (0 for a record shorter than ``window``)."""
    if window <= 0 or stride <= 0:
        raise ConfigError(f"window and stride must be positive, got {window}, {stride}")
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.where(lengths >= window, (lengths - window) // stride + 1, 0)


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Starts of the sliding windows of one record of ``length`` samples (a 10 s record at 100 Hz: 7 windows)."""
    return np.arange(int(window_counts(np.array([length]), window, stride)[0]), dtype=np.int64) * stride


def window_plan(lengths: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(record position, window_index) of every window of records of ``lengths``, in record then start order."""
    counts = window_counts(lengths, window, stride)
    position = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.cumsum(counts) - counts  # each record's first row
    window_index = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first, counts)
    return position, window_index


def cut_windows(records: Sequence[np.ndarray], indices: np.ndarray, window: int, stride: int,
                dtype=np.float32) -> Windows:
    """All sliding windows of ``records`` ((time, leads) arrays; ``indices`` are their store indices)."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(records) != len(indices):
        raise ValueError(f"{len(records)} records but {len(indices)} indices")
    lengths = np.array([len(r) for r in records], dtype=np.int64)
    position, window_index = window_plan(lengths, window, stride)
    leads = records[0].shape[1] if len(records) else LEADS
    signal = np.empty((len(position), leads, window), dtype=dtype)
    bounds = np.searchsorted(position, np.arange(len(records) + 1))
    for k in np.flatnonzero(bounds[1:] > bounds[:-1]).tolist():
        rows = slice(int(bounds[k]), int(bounds[k + 1]))
        signal[rows] = cut(records[k], window_index[rows] * stride, window)
    return Windows(signal=signal, record_index=indices[position], window_index=window_index)


def cut_span_windows(span: np.ndarray, starts: np.ndarray, lengths: np.ndarray, indices: np.ndarray,
                     window: int, stride: int) -> Windows:
    """:func:`cut_windows` of records that lie in one read ``span`` at ``starts`` (samples into it)."""
    records = [span[int(s):int(s) + int(n)] for s, n in zip(starts, lengths, strict=True)]  # views, no copy
    return cut_windows(records, indices, window, stride)


def read_windows(store, indices: np.ndarray, window: int, stride: int) -> Windows:
    """All sliding windows of the records ``indices`` of ``store`` (an ``EcgStore``), in the order given.

    Records are read in a few chunk-aligned spans (:func:`ecg_ray.data.records.read_records`).
    """
    from ecg_ray.data.records import read_records

    indices = np.asarray(indices, dtype=np.int64)
    return cut_windows(read_records(store, indices), indices, window, stride)


def whole_record_batches(indices: np.ndarray, lengths: np.ndarray, max_samples: int) -> list[np.ndarray]:
    """Store indices of records in batches of one length each, for whole-record evaluation.

    Records are grouped by exact length (shortest first; store order within a length) and each
    group is split into batches of ``max(1, max_samples // length)`` records, so a batch holds
    about ``max_samples`` samples per lead whatever the record length.
    """
    indices = np.asarray(indices, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if indices.shape != lengths.shape:
        raise ValueError(f"{len(indices)} indices but {len(lengths)} lengths")
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    order = np.lexsort((indices, lengths))  # by length, then store index
    indices, lengths = indices[order], lengths[order]
    bounds = np.r_[np.flatnonzero(np.r_[True, lengths[1:] != lengths[:-1]]), len(lengths)] if len(lengths) else [0]
    batches = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        size = max(1, int(max_samples) // max(1, int(lengths[lo])))
        batches += [indices[k:min(k + size, hi)] for k in range(int(lo), int(hi), size)]
    return batches


def stack_whole_records(records: Sequence[np.ndarray], indices: np.ndarray, dtype=np.float32) -> Windows:
    """Records of one length ((time, leads) arrays) as one window each: ``signal`` (n, leads, time)."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(records) != len(indices):
        raise ValueError(f"{len(records)} records but {len(indices)} indices")
    if len({len(r) for r in records}) > 1:
        raise ValueError(f"records of one length expected, got lengths {sorted({len(r) for r in records})}")
    if not len(records):
        return Windows(signal=np.empty((0, LEADS, 0), dtype=dtype), record_index=indices,
                       window_index=np.zeros(0, dtype=np.int64))
    signal = np.ascontiguousarray(np.stack(records).transpose(0, 2, 1), dtype=dtype)
    return Windows(signal=signal, record_index=indices, window_index=np.zeros(len(indices), dtype=np.int64))
