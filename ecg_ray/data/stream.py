"""Ray Data streams over prepared stores: random training crops and evaluation windows.

``ray.data.read_zarr`` only reads zarr v2, so an own ``Datasource`` reads our v3 stores.

Training crops (:func:`train_crops`) follow the epoch plan of :mod:`ecg_ray.data.sampling`:
every epoch a seeded permutation of the selected records (of one store, or of several mixed by
weight) decides which records each worker, each read task and each batch get. A read task
takes the next run of its worker's order (see :func:`task_bounds`), cuts ``crops_per_record``
random crops per record (``ecg_ray.data.cutting``), and emits them in a seeded random order;
blocks are yielded in task order (``preserve_order``). So batches are close to i.i.d. draws from the whole selection, a
worker's shard changes from epoch to epoch, and everything (records, crops, batches) depends
only on (seed, epoch, number of workers), never on execution order.

A read task carries only its own slice of the plan (not the whole corpus), so planning and
shipping an epoch costs O(records) in all, not O(records x tasks).

Evaluation windows (:func:`eval_windows`) are read in store order: every window of every record,
tagged with ``record_index`` and ``window_index`` for per-record averaging, cut by the same
function as evaluation and the online probe (:mod:`ecg_ray.data.windows`).

Both streams check what they read (:mod:`ecg_ray.data.integrity`): a chunk whose bytes differ from
the manifest's checksum, or NaN/inf samples, stop the read task with a one-line StoreError naming
the store, the chunk and the records, which the training worker re-raises.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecg_ray.data.cutting import (
    MAPPED_CHUNKS,
    cut,  # noqa: F401  (re-exported)
    cut_raw_chunks,
    cut_through_zarr,
    random_crop_starts,
    raw_chunk_count,
    raw_chunk_layout,
    read_span,
)
from ecg_ray.data.sampling import (  # noqa: F401  (re-exported: the stream's public API)
    StorePart,
    plan_epoch,
    select_records,
    shard,
    split_too_short,
    stratified_subset,
)
from ecg_ray.data.store import DEFAULT_CHUNK_SAMPLES, EcgStore
from ecg_ray.data.windows import cut_span_windows, window_counts, window_starts  # noqa: F401  (window_starts re-exported)
from ecg_ray.errors import ConfigError

logger = logging.getLogger(__name__)

#: records per read task when not set: as many as fit a block of TARGET_BLOCK_BYTES, at most
#: MAX_RECORDS_PER_TASK (Ray Data costs ~12 ms of the consumer's CPU per block whatever its size, so
#: blocks should be large; bench/stream_breakdown.py and bench/RESULTS.md)
TARGET_BLOCK_BYTES = 96 * 2**20
MAX_RECORDS_PER_TASK = 8192
DEFAULT_RECORDS_PER_TASK = MAX_RECORDS_PER_TASK
_CROP_SEED = 3  # domain separation from the draw/order generators of ecg_ray.data.sampling


@dataclass
class StreamInfo:
    """What a stream will deliver, and which records it had to leave out and why."""

    records: int
    rows: int
    too_short: list[str] = field(default_factory=list)
    read_tasks: int = 0
    #: records drawn from each store this epoch (whole corpus, all workers)
    per_store: dict[str, int] = field(default_factory=dict)
    #: records per run of the block shuffle, per store (1 = a full shuffle)
    shuffle_block: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _ReadSpec:
    """The few settings every read task needs (pickled into each task; no per-record arrays)."""

    stores: tuple[str, ...]
    versions: tuple[str, ...]
    chunks: tuple[int | None, ...]
    mode: str
    width: int
    stride: int = 0
    seed: int = 0
    epoch: int = 0
    shard_index: int = 0
    per_record: int = 1
    shuffle: bool = True
    #: per store: read raw chunks through per-process memory maps (small stores) instead of preadv
    mapped: tuple[bool, ...] = ()
    #: check chunks against the manifest's checksums and samples for NaN/inf (off only in benchmarks)
    verify: bool = True
    #: add each crop's start (samples into its record) as ``crop_start``
    crop_starts: bool = False


def _read_crops(spec: _ReadSpec, task: int, part_ids, indices, offsets, lengths, labels, patients=None):
    """One read task of training crops: rows in a seeded random order, one crop per record."""
    from ray.data.block import BlockAccessor

    rng = np.random.default_rng([spec.seed, spec.epoch, _CROP_SEED, spec.shard_index, task])
    rows = np.repeat(np.arange(len(indices)), spec.per_record)
    if spec.shuffle:  # records come shuffled; this also mixes a block shuffle's runs and repeat crops
        rows = rows[rng.permutation(len(rows))]
    starts = random_crop_starts(lengths[rows], spec.width, rng)
    signal = np.empty((len(rows), 12, spec.width), dtype=np.float32)
    row_parts = part_ids[rows]
    for p in np.unique(row_parts).tolist():
        sel = slice(None) if len(spec.stores) == 1 else np.flatnonzero(row_parts == p)
        recs = rows[sel]
        if spec.chunks[p] is not None:
            crops = cut_raw_chunks(spec.stores[p], spec.chunks[p], offsets[recs] + starts[sel], spec.width,
                                   spec.versions[p], out=signal if len(spec.stores) == 1 else None,
                                   mapped=bool(spec.mapped and spec.mapped[p]), verify=spec.verify)
        else:
            crops = cut_through_zarr(spec.stores[p], offsets[recs], lengths[recs], starts[sel], spec.width,
                                     spec.versions[p], verify=spec.verify)
        if crops is not signal:
            signal[sel] = crops
    batch = {"signal": signal, "record_index": indices[rows].astype(np.int64),
             "store_index": row_parts.astype(np.int16)}
    if labels is not None:
        batch["labels"] = labels[rows].astype(np.float32)
    if patients is not None:
        batch["patient_index"] = patients[rows].astype(np.int64)
    if spec.crop_starts:
        batch["crop_start"] = starts.astype(np.int64)
    return BlockAccessor.batch_to_block(batch)


def _read_windows(spec: _ReadSpec, task: int, part_ids, indices, offsets, lengths, labels, patients=None):
    """One read task of evaluation windows over consecutive records of one store."""
    from ray.data.block import BlockAccessor

    signal, rel = read_span(spec.stores[0], offsets, lengths, spec.versions[0], verify=spec.verify)
    windows = cut_span_windows(signal, rel, lengths, indices, spec.width, spec.stride)
    batch = {"signal": windows.signal, "record_index": windows.record_index, "window_index": windows.window_index}
    if labels is not None:
        batch["labels"] = np.repeat(labels, window_counts(lengths, spec.width, spec.stride), axis=0).astype(np.float32)
    return BlockAccessor.batch_to_block(batch)


def task_bounds(n: int, records_per_task: int, short_first: bool = False) -> np.ndarray:
    """Record positions where read tasks start (+ n): equal tasks, the first one short if asked.

    The first block is what the consumer waits for at the start of every epoch (Ray Data starts a
    new stream per epoch); with ``short_first`` it holds an eighth of a full task (at least 256
    records), so the first batch arrives sooner while the full-size tasks behind it keep the
    per-block cost low. Only for a full shuffle: under a block shuffle a short task would mix
    fewer runs.
    """
    first = min(n, records_per_task, max(256, records_per_task // 8)) if short_first else 0
    rest = n - first
    if rest <= 0:
        return np.array([0, n])
    tasks = max(1, math.ceil(rest / records_per_task))
    bounds = first + np.linspace(0, rest, tasks + 1).astype(int)
    return np.concatenate([[0], bounds]) if first else bounds


def _make_datasource_class():
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class EcgDatasource(Datasource):
        """Read tasks over consecutive runs of a plan (store id, record index per position)."""

        def __init__(self, spec: _ReadSpec, part_ids: np.ndarray, indices: np.ndarray, offsets: np.ndarray,
                     lengths: np.ndarray, labels: np.ndarray | None, records_per_task: int,
                     short_first: bool = False, patients: np.ndarray | None = None):
            super().__init__()
            self.short_first = short_first
            self.spec = spec
            self.part_ids, self.indices, self.offsets, self.lengths = part_ids, indices, offsets, lengths
            self.labels, self.records_per_task, self.patients = labels, records_per_task, patients

        def rows_for(self, lengths: np.ndarray) -> int:
            if self.spec.mode == "crops":
                return int(len(lengths) * self.spec.per_record)
            return int(np.sum(np.maximum(0, (lengths - self.spec.width) // self.spec.stride + 1)))

        def estimate_inmemory_data_size(self) -> int:
            return self.rows_for(self.lengths) * 12 * self.spec.width * 4

        def bounds(self) -> np.ndarray:
            return task_bounds(len(self.indices), self.records_per_task, self.short_first)

        def num_tasks(self) -> int:
            return len(self.bounds()) - 1

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            bounds = self.bounds()
            read = _read_crops if self.spec.mode == "crops" else _read_windows
            tasks = []
            for task, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
                if hi <= lo:
                    continue
                part = slice(lo, hi)
                # Only this task's slice travels with it (copies: a view would pickle the whole array).
                args = (self.spec, task, self.part_ids[part].copy(), self.indices[part].copy(),
                        self.offsets[part].copy(), self.lengths[part].copy(),
                        None if self.labels is None else self.labels[part].copy(),
                        None if self.patients is None else self.patients[part].copy())
                rows = self.rows_for(self.lengths[part])
                meta = BlockMetadata(num_rows=rows, size_bytes=rows * (12 * self.spec.width * 4 + 16),
                                     input_files=None, exec_stats=None)
                tasks.append(ReadTask(lambda read=read, args=args: [read(*args)], meta))
            return tasks

    return EcgDatasource


_DATASOURCE_CLASS = None


def _datasource(*args, **kwargs):
    global _DATASOURCE_CLASS
    if _DATASOURCE_CLASS is None:  # import Ray lazily: the CLI's prepare/inspect never need it
        _DATASOURCE_CLASS = _make_datasource_class()
    return _DATASOURCE_CLASS(*args, **kwargs)


def _open(store: EcgStore | str | Path) -> EcgStore:
    return store if isinstance(store, EcgStore) else EcgStore(store)


def auto_records_per_task(width: int, rows_per_record: float = 1.0) -> int:
    """Records per read task so that a block holds about TARGET_BLOCK_BYTES (8192 crops of 2.5 s at 100 Hz)."""
    per_record = 12 * 4 * width * max(1.0, rows_per_record)
    return int(min(MAX_RECORDS_PER_TASK, max(64, TARGET_BLOCK_BYTES // per_record)))


def auto_shuffle_block(store: EcgStore, indices: np.ndarray | None = None,
                       records_per_task: int = DEFAULT_RECORDS_PER_TASK) -> int:
    """Records per shuffle run: 1 where a crop is read on its own (local raw chunks), else ~one chunk.

    Compressed or cloud stores decode whole chunks, so runs of about one chunk's worth of records
    keep each read task decoding few chunks instead of one per record. Runs are capped at
    ``records_per_task // 256`` so every read task (and so every batch) still mixes >= 256 runs
    drawn from the whole store: a batch of B rows then has a source share within about
    sqrt(p (1 - p) (1 / runs + 1 / B)) of the corpus share p (+-0.044 for p = 0.5, B = 256).
    """
    if raw_chunk_layout(str(store.path)) is not None:
        return 1
    lengths = store.column("length")
    lengths = lengths if indices is None or len(indices) == 0 else lengths[indices]
    if len(lengths) == 0:
        return 1
    # From the manifest, never a fallback: every worker must compute the same block (same plan).
    chunk = int(store.manifest.get("chunk_samples", DEFAULT_CHUNK_SAMPLES))
    per_chunk = int(chunk // max(1.0, float(np.median(lengths))))
    return max(1, min(per_chunk, int(records_per_task) // 256))


def _dataset(source, tasks: int):
    import ray

    dataset = ray.data.read_datasource(source, override_num_blocks=tasks)
    # Blocks in task order: batches then depend on (seed, epoch) only, not on which task finished first.
    dataset.context.execution_options.preserve_order = True
    return dataset


def train_crops(store: EcgStore | str | Path | list[StorePart], indices: np.ndarray | None = None, *,
                crop: int = 250, seed: int = 0, epoch: int = 0, crops_per_record: int = 1,
                with_labels: bool = False, label_set: str = "all", shard_index: int = 0, num_shards: int = 1,
                records_per_task: int | None = None, shuffle: bool = True,
                shuffle_block: int | None = None, verify: bool = True, fields: tuple[str, ...] = ()):
    """Dataset of random crops ``signal`` (12, crop) float32 + ``record_index``, ``store_index`` (+ ``labels``).

    ``fields`` adds what a method's step asks for (``Method.batch_fields``): ``labels`` (as
    ``with_labels``), ``patient_index`` (an integer per patient, unique over the stores of a
    mixture: :func:`patient_codes`) and ``crop_start`` (the crop's first sample in its record).

    ``store`` is one store (with ``indices`` from :func:`select_records`, default every record) or
    a list of :class:`StorePart` (several stores mixed by weight). ``shuffle_block`` None picks
    :func:`auto_shuffle_block` per store; 1 is a full shuffle. ``records_per_task`` None picks
    :func:`auto_records_per_task`. Returns ``(ray.data.Dataset, StreamInfo)``.
    ``verify=False`` skips the chunk checksum and NaN/inf checks (``ecg_ray.data.integrity``): for
    benchmarks measuring their cost only; a run never sets it.
    """
    if crop <= 0:
        raise ConfigError(f"data.crop must be positive, got {crop}")
    if records_per_task is None:
        records_per_task = auto_records_per_task(crop, crops_per_record)
    if records_per_task < 1:
        raise ConfigError(f"data.records_per_task must be >= 1, got {records_per_task}")
    if isinstance(store, list | tuple):
        parts = [dataclasses.replace(p) for p in store]  # the caller's parts stay as they were
        if indices is not None:
            raise ConfigError("train_crops: give indices inside each StorePart, not beside a list of parts")
    else:
        opened = _open(store)
        parts = [StorePart(opened, np.arange(len(opened)) if indices is None else np.asarray(indices))]
    with_labels = with_labels or "labels" in fields
    if with_labels and len(parts) > 1:
        raise ConfigError("labelled crops come from one store; mix several stores for pretraining only")
    too_short: list[str] = []
    for part in parts:
        part.indices, short = split_too_short(part.store, part.indices, crop)
        too_short += short
    if too_short:
        logger.warning("%d record(s) shorter than %d samples are left out of the crops stream: %s%s",
                       len(too_short), crop, too_short[:5], " ..." if len(too_short) > 5 else "")
    if sum(len(p.indices) for p in parts) == 0:
        raise ConfigError(f"no records of at least {crop} samples to stream from "
                          f"{', '.join(str(p.store.path) for p in parts)}")
    if shuffle_block is None:
        # Runs are capped by the records a task will really hold (tasks split a worker's share evenly).
        per_worker = sum(len(p.indices) for p in parts) // max(1, num_shards)
        task_size = per_worker / max(1, math.ceil(per_worker / records_per_task))
        blocks = [auto_shuffle_block(p.store, p.indices, int(task_size)) for p in parts]
    else:
        if shuffle_block < 1:
            raise ConfigError(f"data.shuffle_block must be >= 1 (or null for auto), got {shuffle_block}")
        blocks = [int(shuffle_block)] * len(parts)
    plan = plan_epoch(parts, seed=seed, epoch=epoch, shard_index=shard_index, num_shards=num_shards,
                      shuffle=shuffle, shuffle_block=blocks)
    offsets = np.empty(len(plan.indices), dtype=np.int64)
    lengths = np.empty(len(plan.indices), dtype=np.int64)
    for k, part in enumerate(parts):
        mine = plan.part_ids == k
        offsets[mine] = part.store.column("offset")[plan.indices[mine]]
        lengths[mine] = part.store.column("length")[plan.indices[mine]]
    labels = parts[0].store.label_matrix(label_set)[plan.indices] if with_labels else None
    patients = patient_codes(parts, plan.part_ids, plan.indices) if "patient_index" in fields else None
    chunks = tuple(raw_chunk_layout(str(p.store.path)) for p in parts)
    # Memory maps for small stores whose chunks are at least a crop long (a crop then spans <= 2 chunks).
    mapped = tuple(c is not None and c >= crop and raw_chunk_count(str(p.store.path)) <= MAPPED_CHUNKS
                   for c, p in zip(chunks, parts, strict=True))
    spec = _ReadSpec(stores=tuple(str(p.store.path) for p in parts), versions=tuple(p.store.version for p in parts),
                     chunks=chunks, mapped=mapped, mode="crops", width=crop,
                     seed=seed, epoch=epoch, shard_index=shard_index, per_record=crops_per_record, shuffle=shuffle,
                     verify=verify, crop_starts="crop_start" in fields)
    source = _datasource(spec, plan.part_ids, plan.indices, offsets, lengths, labels, records_per_task,
                         short_first=shuffle and max(blocks) == 1, patients=patients)
    info = StreamInfo(records=len(plan.indices), rows=source.rows_for(lengths), too_short=too_short,
                      read_tasks=source.num_tasks(), per_store=plan.per_store, shuffle_block=blocks)
    return _dataset(source, source.num_tasks()), info


def eval_windows(store: EcgStore | str | Path, indices: np.ndarray | None = None, *, window: int = 250,
                 stride: int = 125, with_labels: bool = True, label_set: str = "all", shard_index: int = 0,
                 num_shards: int = 1, records_per_task: int | None = None):
    """Dataset of sliding windows with ``record_index`` and ``window_index`` for per-record averaging."""
    store = _open(store)
    indices = np.arange(len(store)) if indices is None else np.sort(np.asarray(indices))
    if window <= 0 or stride <= 0:
        raise ConfigError(f"window and stride must be positive, got {window}, {stride}")
    if num_shards > 1:
        per = math.ceil(len(indices) / num_shards)  # evaluation keeps every record
        indices = indices[shard_index * per:(shard_index + 1) * per]
    indices, too_short = split_too_short(store, indices, window)
    if too_short:
        logger.warning("%d record(s) shorter than %d samples are left out of the windows stream: %s%s",
                       len(too_short), window, too_short[:5], " ..." if len(too_short) > 5 else "")
    if len(indices) == 0:
        raise ConfigError(f"no records of at least {window} samples to stream from {store.path}")
    offsets = store.column("offset")[indices]
    lengths = store.column("length")[indices]
    labels = store.label_matrix(label_set)[indices] if with_labels else None
    if records_per_task is None:
        records_per_task = auto_records_per_task(window, float(np.median((lengths - window) // stride + 1)))
    spec = _ReadSpec(stores=(str(store.path),), versions=(store.version,), chunks=(None,), mode="windows",
                     width=window, stride=stride)
    source = _datasource(spec, np.zeros(len(indices), np.int32), indices, offsets, lengths, labels,
                         records_per_task)
    info = StreamInfo(records=len(indices), rows=source.rows_for(lengths), too_short=too_short,
                      read_tasks=source.num_tasks())
    return _dataset(source, source.num_tasks()), info


def patient_codes(parts: list[StorePart], part_ids: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """An int64 per planned record naming its patient, unique over the stores of a mixture.

    The codes of each store's ``patient_id`` column (:meth:`EcgStore.value_codes`: 4 bytes per record,
    the ids themselves are not kept), shifted past the previous stores' codes, so two stores' patients
    never share a code. A record without a patient id (or a store without the column) is a patient of
    its own. Costs 8 bytes per planned record, plus the column's codes (4 bytes per record) per store.
    """
    codes = np.empty(len(indices), dtype=np.int64)
    base = 0
    for k, part in enumerate(parts):
        mine = part_ids == k
        store = part.store
        if store.has_column("patient_id"):
            store_codes, patients = store.value_codes("patient_id")
            chosen = store_codes[indices[mine]].astype(np.int64)
            # No patient id: a patient of its own, numbered after the store's patients.
            chosen = np.where(chosen < 0, patients + indices[mine], chosen)
            codes[mine] = base + chosen
            base += patients + len(store)
        else:
            codes[mine] = base + indices[mine]
            base += len(store)
    return codes
