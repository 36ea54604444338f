"""Ray Data streams over a prepared store: random training crops and evaluation windows.

``ray.data.read_zarr`` only reads zarr v2, so :class:`_EcgDatasource` reads our v3 store
directly. Each read task owns a run of consecutive records (a contiguous slice of the
``signals`` array, ~4096 records), reads it with one zarr call and cuts all its crops with
one strided view (``sliding_window_view`` + fancy indexing): no per-record Python work.

Crops are deterministic: the same (seed, epoch, record set) gives the same crops whatever
the execution order, because each read task seeds its own generator from
(seed, epoch, first record of the task). A new epoch is a new dataset (``epoch=e``), which
is how one random crop per record per epoch is drawn.

Sharding for data-parallel training is done here (``shard_index``/``num_shards``), not by
Ray Train's dataset splitting, so each worker reads only its own records and every worker
gets exactly the same number of rows (DDP needs equal step counts).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ecg_ray import storage
from ecg_ray.data.store import SIGNALS, EcgStore, open_signals
from ecg_ray.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_RECORDS_PER_TASK = 4096
# Read a task's whole span in one call when at least this share of it is wanted; otherwise read
# each run of wanted records separately (a 5 % label fraction should not read 100 % of the data).
_DENSE_READ_SHARE = 0.25


# ----------------------------------------------------------------------------- record selection

def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions of a multi-label stratified subset of ``labels`` rows of size round(fraction*N).

    Rare labels are served first: for each label (rarest first) not yet represented, one random
    row carrying it is taken, so every label with positives keeps at least one where the budget
    allows; the rest of the budget is filled with random rows. Deterministic for a seed.
    """
    n = labels.shape[0]
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"data.label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(n)
    budget = max(1, int(round(fraction * n)))
    rng = np.random.default_rng(seed)
    chosen = np.zeros(n, dtype=bool)
    counts = labels.sum(axis=0)
    for label in np.argsort(counts, kind="stable"):
        if counts[label] == 0 or chosen.sum() >= budget:
            continue
        carriers = np.flatnonzero(labels[:, label])
        if not chosen[carriers].any():
            chosen[rng.choice(carriers)] = True
    rest = np.flatnonzero(~chosen)
    fill = budget - int(chosen.sum())
    if fill > 0:
        chosen[rng.choice(rest, size=fill, replace=False)] = True
    return np.flatnonzero(chosen)


def select_records(
    store: EcgStore,
    *,
    folds: Sequence[int] | None = None,
    datasets: Sequence[str] | None = None,
    label_fraction: float = 1.0,
    label_set: str = "all",
    seed: int = 0,
) -> np.ndarray:
    """Sorted record indices after fold / dataset filters and a stratified label fraction."""
    records = store.records
    keep = np.ones(len(records), dtype=bool)
    if folds:
        if "fold" not in records:
            raise ConfigError(f"store {store.path} has no folds; remove data.folds")
        keep &= records["fold"].isin([int(f) for f in folds]).to_numpy()
    if datasets:
        unknown = sorted(set(datasets) - set(records["dataset"].unique()))
        if unknown:
            raise ConfigError(f"data.datasets: {unknown} not in store (has {sorted(records['dataset'].unique())})")
        keep &= records["dataset"].isin(list(datasets)).to_numpy()
    indices = np.flatnonzero(keep)
    if label_fraction < 1.0:
        labels = store.label_matrix(label_set)[indices]
        indices = indices[stratified_subset(labels, label_fraction, seed)]
    return np.sort(indices)


def shard(indices: np.ndarray, shard_index: int, num_shards: int) -> np.ndarray:
    """Contiguous equal-size part ``shard_index`` of ``num_shards`` (the remainder is dropped)."""
    if not 0 <= shard_index < num_shards:
        raise ConfigError(f"shard_index {shard_index} outside 0..{num_shards - 1}")
    per = len(indices) // num_shards
    if per == 0:
        raise ConfigError(f"{len(indices)} records cannot be split over {num_shards} workers")
    return indices[shard_index * per:(shard_index + 1) * per]


# ----------------------------------------------------------------------------- cutting

def random_crop_starts(lengths: np.ndarray, crop: int, rng: np.random.Generator, per_record: int = 1) -> np.ndarray:
    """Uniform crop starts in [0, length - crop] for each record (repeated ``per_record`` times)."""
    span = np.repeat(lengths - crop + 1, per_record)
    return np.floor(rng.random(span.shape[0]) * span).astype(np.int64)


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Starts of the sliding windows of one record (a 10 s record at 100 Hz: 7 windows)."""
    if length < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - window + 1, stride, dtype=np.int64)


def cut(signal: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Crops of ``signal`` (time, leads) at ``starts`` as a (n, leads, width) float32 array."""
    windows = sliding_window_view(signal, width, axis=0)  # (time - width + 1, leads, width), a view
    return np.ascontiguousarray(windows[starts])


# ----------------------------------------------------------------------------- datasource

@dataclass
class StreamInfo:
    """What a stream will deliver, and which records it had to leave out and why."""

    records: int
    rows: int
    too_short: list[str] = field(default_factory=list)
    read_tasks: int = 0



def _make_datasource_class():
    from ray.data.block import BlockAccessor, BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class EcgDatasource(Datasource):
        """Read tasks over runs of records of one store; ``mode`` is "crops" or "windows"."""

        def __init__(self, store_path: str, indices: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                     labels: np.ndarray | None, *, mode: str, width: int, stride: int = 0, seed: int = 0,
                     epoch: int = 0, per_record: int = 1, records_per_task: int = DEFAULT_RECORDS_PER_TASK,
                     shuffle: bool = True, store_version: str = ""):
            super().__init__()
            self.store_path, self.store_version = store_path, store_version
            self.indices, self.offsets, self.lengths, self.labels = indices, offsets, lengths, labels
            self.mode, self.width, self.stride = mode, width, stride
            self.seed, self.epoch, self.per_record, self.shuffle = seed, epoch, per_record, shuffle
            self.records_per_task = records_per_task

        def _rows_for(self, lengths: np.ndarray) -> int:
            if self.mode == "crops":
                return int(len(lengths) * self.per_record)
            return int(np.sum(np.maximum(0, (lengths - self.width) // self.stride + 1)))

        def estimate_inmemory_data_size(self) -> int:
            return self._rows_for(self.lengths) * 12 * self.width * 4

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            n = len(self.indices)
            n_tasks = max(1, math.ceil(n / self.records_per_task))
            bounds = np.linspace(0, n, n_tasks + 1).astype(int)
            tasks = []
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                if hi <= lo:
                    continue
                part = slice(lo, hi)
                args = (self.store_path, self.indices[part], self.offsets[part], self.lengths[part],
                        None if self.labels is None else self.labels[part])
                rows = self._rows_for(self.lengths[part])
                meta = BlockMetadata(num_rows=rows, size_bytes=rows * (12 * self.width * 4 + 16),
                                     input_files=None, exec_stats=None)
                tasks.append(ReadTask(lambda a=args: [self._read(*a)], meta))
            return tasks

        def _read(self, store_path, indices, offsets, lengths, labels):
            if self.mode == "crops":
                rng = np.random.default_rng([self.seed, self.epoch, int(indices[0])])
                starts = random_crop_starts(lengths, self.width, rng, self.per_record)
                row_record = np.repeat(np.arange(len(indices)), self.per_record)
                chunk = _raw_chunk_layout(store_path)
                if chunk is not None:
                    crops = _cut_from_raw_chunks(store_path, chunk, offsets[row_record] + starts, self.width)
                else:
                    signal, rel = _read_span(store_path, offsets, lengths, self.store_version)
                    crops = cut(signal, rel[row_record] + starts, self.width)
                batch = {"signal": crops, "record_index": indices[row_record].astype(np.int64)}
                if self.shuffle:  # local shuffle within the task's records
                    order = rng.permutation(len(row_record))
                    batch = {k: v[order] for k, v in batch.items()}
                    row_record = row_record[order]
            else:
                signal, rel = _read_span(store_path, offsets, lengths, self.store_version)
                per = [window_starts(int(n), self.width, self.stride) for n in lengths]
                row_record = np.repeat(np.arange(len(indices)), [len(p) for p in per])
                starts = np.concatenate([r + p for r, p in zip(rel, per, strict=True)]) if per else np.zeros(0, int)
                batch = {"signal": cut(signal, starts, self.width),
                         "record_index": indices[row_record].astype(np.int64),
                         "window_index": np.concatenate([np.arange(len(p)) for p in per]).astype(np.int64)}
            if labels is not None:
                batch["labels"] = labels[row_record].astype(np.float32)
            return BlockAccessor.batch_to_block(batch)

    return EcgDatasource


def _raw_chunk_layout(store_path: str) -> int | None:
    """Chunk length if ``signals`` is stored as raw little-endian float32 chunks on a local disk.

    Such chunks are plain arrays on disk (zarr v3 ``bytes`` codec, default chunk keys), so a
    crop can be cut from a memory map of the chunk file, touching only the pages it covers,
    instead of decoding whole records. Any other layout returns None (read through zarr).
    """
    if storage.is_uri(store_path):
        return None  # memory maps need a local file; cloud stores are read through zarr/obstore
    meta_file = Path(store_path) / SIGNALS / "zarr.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    codecs = meta.get("codecs", [])
    raw = (len(codecs) == 1 and codecs[0].get("name") == "bytes"
           and codecs[0].get("configuration", {}).get("endian", "little") == "little")
    key = meta.get("chunk_key_encoding", {})
    if not (raw and meta.get("data_type") == "float32" and key.get("name") == "default"
            and key.get("configuration", {}).get("separator", "/") == "/"):
        return None
    return int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])


def _cut_from_raw_chunks(store_path: str, chunk: int, starts: np.ndarray, width: int) -> np.ndarray:
    """Crops at global sample positions ``starts`` read from memory-mapped raw chunk files."""
    leads = 12
    out = np.empty((len(starts), leads, width), dtype=np.float32)
    chunk_of = starts // chunk
    maps: dict[int, np.ndarray] = {}

    def chunk_map(k: int) -> np.ndarray:
        if k not in maps:
            path = Path(store_path) / SIGNALS / "c" / str(k) / "0"
            # zarr does not write a chunk equal to the fill value (all zeros): recreate it
            maps[k] = (np.memmap(path, dtype="<f4", mode="r").reshape(-1, leads) if path.exists()
                       else np.zeros((chunk, leads), np.float32))
        return maps[k]

    inside = (starts % chunk) + width <= chunk
    for k in np.unique(chunk_of[inside]):
        sel = np.flatnonzero(inside & (chunk_of == k))
        out[sel] = cut(chunk_map(int(k)), starts[sel] % chunk, width)
    for i in np.flatnonzero(~inside):  # the rare crop that straddles two chunks
        k, local = int(chunk_of[i]), int(starts[i] % chunk)
        joined = np.concatenate([chunk_map(k)[local:], chunk_map(k + 1)[:width - (chunk - local)]])
        out[i] = joined.T
    return out


def _read_span(store_path: str, offsets: np.ndarray, lengths: np.ndarray,
               store_version: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Signals covering the given records and each record's start within the returned array."""
    array = _signals(store_path, store_version)
    start, stop = int(offsets[0]), int(offsets[-1] + lengths[-1])
    wanted = int(lengths.sum())
    if wanted >= _DENSE_READ_SHARE * (stop - start):
        return array[start:stop], offsets - start
    # Sparse selection: read each run of consecutive records separately and pack them.
    ends = offsets + lengths
    breaks = np.flatnonzero(offsets[1:] != ends[:-1]) + 1
    pieces, rel, pos = [], np.empty_like(offsets), 0
    for run in np.split(np.arange(len(offsets)), breaks):
        a, b = int(offsets[run[0]]), int(ends[run[-1]])
        pieces.append(array[a:b])
        rel[run] = offsets[run] - a + pos
        pos += b - a
    return np.concatenate(pieces), rel


@functools.lru_cache(maxsize=8)
def _signals(store_path: str, store_version: str):
    # One open array per store and process: opening a cloud store costs a metadata round trip.
    # The version (from the manifest) keeps a store re-prepared at the same path from being
    # read through a stale array.
    return open_signals(store_path)


_DATASOURCE_CLASS = None


def _datasource(*args, **kwargs):
    global _DATASOURCE_CLASS
    if _DATASOURCE_CLASS is None:  # import Ray lazily: the CLI's prepare/inspect never need it
        _DATASOURCE_CLASS = _make_datasource_class()
    return _DATASOURCE_CLASS(*args, **kwargs)


def _build(store: EcgStore | str | Path, indices, *, width: int, with_labels: bool, label_set: str,
           mode: str, **kwargs):
    import ray

    store = store if isinstance(store, EcgStore) else EcgStore(store)
    lengths_all = store.records["length"].to_numpy()
    too_short_mask = lengths_all[indices] < width
    too_short = store.records["id"].to_numpy()[indices[too_short_mask]].tolist()
    if too_short:
        logger.warning("%d record(s) shorter than %d samples are left out of the %s stream: %s%s",
                       len(too_short), width, mode, too_short[:5], " ..." if len(too_short) > 5 else "")
    indices = indices[~too_short_mask]
    if len(indices) == 0:
        raise ConfigError(f"no records of at least {width} samples to stream from {store.path}")
    labels = store.label_matrix(label_set)[indices] if with_labels else None
    source = _datasource(str(store.path), indices, store.records["offset"].to_numpy()[indices],
                         lengths_all[indices], labels, mode=mode, width=width,
                         store_version=store.version, **kwargs)
    tasks = max(1, math.ceil(len(indices) / source.records_per_task))
    dataset = ray.data.read_datasource(source, override_num_blocks=tasks)
    info = StreamInfo(records=len(indices), rows=source._rows_for(source.lengths), too_short=too_short,
                      read_tasks=tasks)
    return dataset, info


def train_crops(store: EcgStore | str | Path, indices: np.ndarray | None = None, *, crop: int = 250,
                seed: int = 0, epoch: int = 0, crops_per_record: int = 1, with_labels: bool = False,
                label_set: str = "all", shard_index: int = 0, num_shards: int = 1,
                records_per_task: int = DEFAULT_RECORDS_PER_TASK, shuffle: bool = True):
    """Dataset of random crops ``signal`` (12, crop) float32 (+ ``record_index``, ``labels``).

    ``indices`` come from :func:`select_records` (default: every record). Returns
    ``(ray.data.Dataset, StreamInfo)``.
    """
    store = store if isinstance(store, EcgStore) else EcgStore(store)
    indices = np.arange(len(store)) if indices is None else np.asarray(indices)
    if num_shards > 1:
        # Rotate before sharding so a worker does not see the same records every epoch.
        indices = shard(np.roll(indices, epoch * (len(indices) // max(1, num_shards * 7) + 1)),
                        shard_index, num_shards)
        indices = np.sort(indices)
    if crop <= 0:
        raise ConfigError(f"data.crop must be positive, got {crop}")
    return _build(store, indices, width=crop, with_labels=with_labels, label_set=label_set, mode="crops",
                  seed=seed, epoch=epoch, per_record=crops_per_record, records_per_task=records_per_task,
                  shuffle=shuffle)


def eval_windows(store: EcgStore | str | Path, indices: np.ndarray | None = None, *, window: int = 250,
                 stride: int = 125, with_labels: bool = True, label_set: str = "all", shard_index: int = 0,
                 num_shards: int = 1, records_per_task: int = DEFAULT_RECORDS_PER_TASK):
    """Dataset of sliding windows with ``record_index`` and ``window_index`` for per-record averaging."""
    store = store if isinstance(store, EcgStore) else EcgStore(store)
    indices = np.arange(len(store)) if indices is None else np.asarray(indices)
    if window <= 0 or stride <= 0:
        raise ConfigError(f"window and stride must be positive, got {window}, {stride}")
    if num_shards > 1:
        per = math.ceil(len(indices) / num_shards)  # evaluation keeps every record
        indices = indices[shard_index * per:(shard_index + 1) * per]
    return _build(store, indices, width=window, with_labels=with_labels, label_set=label_set,
                  mode="windows", stride=stride, records_per_task=records_per_task, shuffle=False)
