"""Read tasks of the embedding pipeline: runs of consecutive store records -> encoder input windows.

Each read task covers a contiguous run of the selected records (in store order), reads them in
one span (``ecg_ray.data.cutting.read_span``: chunk checksums and NaN/inf checks included),
resamples each record to the encoder's rate with the filter ``prepare`` uses
(``ecg_ray.data.signal.resample``) when the store's rate differs, and cuts the windows with the
one window cutter of the package (``ecg_ray.data.windows.cut_windows``). A block holds whole
records only, in store order, and at most about :data:`TARGET_BLOCK_BYTES` of signal.

A lead subset (``data.leads``) zeroes the other leads of every window with the evaluation's helper
(``ecg_ray.data.leads.zero_missing_leads``). Window 0 means the whole record: one row per record, its signal as long as the record (rows of
different lengths in one block become Ray's variable-shaped tensor column).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ecg_ray.data.leads import zero_missing_leads
from ecg_ray.data.signal import resample
from ecg_ray.data.windows import cut_windows, window_counts

#: bytes of signal per block (input span + windows); Ray Data costs the consumer a few ms per block
TARGET_BLOCK_BYTES = 64 * 2**20
#: records per read task at most (short records: a few thousand windows per block is plenty)
MAX_RECORDS_PER_TASK = 8192


def resampled_length(lengths: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Samples of each record after :func:`ecg_ray.data.signal.resample` from ``fs_in`` to ``fs_out``.

    ``resample_poly`` with up/down gives ceil(n * up / down) samples, with the rational ratio
    ``resample`` uses.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if fs_in == fs_out:
        return lengths
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return -(-lengths * ratio.numerator // ratio.denominator)


@dataclass(frozen=True)
class Windowing:
    """How records become encoder inputs: windows of ``window`` samples every ``stride`` (0 = whole record)."""

    window: int
    stride: int
    #: whole records (window 0) shorter than this are too short
    min_length: int = 1

    def counts(self, lengths: np.ndarray) -> np.ndarray:
        """Windows of each record of ``lengths`` samples (at the encoder's rate); 0 = too short."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if self.window == 0:
            return (lengths >= self.min_length).astype(np.int64)
        return window_counts(lengths, self.window, self.stride)


@dataclass(frozen=True)
class ReadSpec:
    """What every read task needs (pickled into each; no per-record arrays)."""

    store: str
    version: str
    fs_in: float
    fs_out: float
    windowing: Windowing
    #: (12,) bool: leads kept, the others zeroed (``data.leads``); None keeps every lead
    kept_leads: tuple[bool, ...] | None = None


def records_per_task(lengths_in: np.ndarray, lengths_out: np.ndarray, windows: np.ndarray, windowing: Windowing,
                     leads: int = 12) -> int:
    """Records per read task so that one task's input span plus its windows is about TARGET_BLOCK_BYTES."""
    if len(lengths_in) == 0:
        return 1
    width = windowing.window or float(np.median(lengths_out))
    per_record = leads * 4 * (float(np.median(lengths_in)) + float(np.median(windows)) * width)
    return int(min(MAX_RECORDS_PER_TASK, max(1, TARGET_BLOCK_BYTES // max(per_record, 1.0))))


def read_block(spec: ReadSpec, indices: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """The encoder inputs of consecutive records ``indices``: ``signal``, ``record_index``, ``window_index``, ``start``.

    ``start`` is each window's first sample in its record at the encoder's rate.
    """
    from ecg_ray.data.cutting import read_span

    span, starts = read_span(spec.store, offsets, lengths, spec.version)
    records = [span[int(s):int(s) + int(n)] for s, n in zip(starts, lengths, strict=True)]
    if spec.fs_in != spec.fs_out:
        records = [resample(r, spec.fs_in, spec.fs_out).astype(np.float32) for r in records]
    windowing = spec.windowing
    if windowing.window == 0:
        keep = [k for k, r in enumerate(records) if len(r) >= windowing.min_length]
        signals = [np.ascontiguousarray(records[k].T, dtype=np.float32) for k in keep]
        if spec.kept_leads is not None:
            signals = [zero_missing_leads(s[None], np.array(spec.kept_leads))[0] for s in signals]
        owner = indices[keep].astype(np.int64)
        if len({s.shape for s in signals}) <= 1:
            signal = np.stack(signals) if signals else np.empty((0, 12, 0), dtype=np.float32)
        else:  # ragged: an object column, which Ray keeps as a variable-shaped tensor
            signal = np.empty(len(signals), dtype=object)
            signal[:] = signals
        zeros = np.zeros(len(owner), dtype=np.int64)
        return {"signal": signal, "record_index": owner, "window_index": zeros, "start": zeros}
    windows = cut_windows(records, indices, windowing.window, windowing.stride)
    if spec.kept_leads is not None:
        windows = dataclasses.replace(windows, signal=zero_missing_leads(windows.signal, np.array(spec.kept_leads)))
    return {"signal": windows.signal, "record_index": windows.record_index, "window_index": windows.window_index,
            "start": windows.window_index * windowing.stride}


def _read_task(spec: ReadSpec, indices, offsets, lengths):
    from ray.data.block import BlockAccessor

    return [BlockAccessor.batch_to_block(read_block(spec, indices, offsets, lengths))]


def make_datasource(spec: ReadSpec, indices: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                    windows: np.ndarray, bounds: np.ndarray, width: np.ndarray):
    """A Ray Data datasource whose read task ``k`` reads positions ``bounds[k]:bounds[k+1]`` of the plan.

    ``windows`` and ``width`` (samples per window row) per record size each task's metadata.
    """
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class EmbeddingDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return int(np.sum(windows * width)) * 12 * 4

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                part = slice(int(lo), int(hi))
                # Only this task's slice travels with it (copies: a view would pickle the whole array).
                args = (spec, indices[part].copy(), offsets[part].copy(), lengths[part].copy())
                rows = int(windows[part].sum())
                meta = BlockMetadata(num_rows=rows, size_bytes=int(np.sum(windows[part] * width[part])) * 48,
                                     input_files=None, exec_stats=None)
                tasks.append(ReadTask(lambda args=args: _read_task(*args), meta))
            return tasks

    return EmbeddingDatasource()
