"""``ecg-ray prepare --ray``: the process pool's store, read and written by Ray tasks across a cluster.

One store with the usual layout (nothing on the read side changes), built in two phases of Ray
tasks around one driver:

1. **Read.** Each task reads a contiguous batch of source refs with ``prepare.read_one`` (the
   pool's own call: same checks, same resampling), writes the batch's standardized signals as
   one raw float32 file into the store's staging directory and returns metadata only: each
   record without its signal (id, dataset, file, rate, labels, metadata, unmapped label texts),
   its length and its derived label columns, or the :class:`SkippedRecord`; and its node.
2. **Driver.** Batches are taken in source order, whatever order they finish in: ``on_error``
   and exclusions are applied and rows, labels, counts and offsets are kept by the same
   :class:`~ecg_ray.data.store_writer.StoreWriter` as the pool path, which then gives
   ``signals`` its final length.
3. **Write.** Each task owns a range of whole chunks: it assembles them from the staged batch
   files that overlap them, writes them (every chunk is its own file, so no two tasks share one)
   and returns their sha256. The driver removes the batch files and finalizes exactly as the pool
   path does: tables, manifest last, atomic move into place (``ecg_ray.overwrite`` rules).

The driver holds per-record metadata and three integers per stored record, never signals. Any
failure cancels the tasks and removes the staging directory, so an interrupted run leaves nothing
that opens as a store, and the next run of the same target cleans what a killed one left
(``ecg_ray.data.staging``). The staging directory must be visible to every node: a local
``--out`` on a file system all nodes mount (a task on a node that cannot see it stops the run,
naming the node). A cloud ``--out`` is staged on the driver's disk as in the pool path, which
is visible to a single-node cluster only.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ecg_ray import storage
from ecg_ray.data.prepare import Exclusions, check_prepare_request, finalize_store, log_unmapped, read_one
from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.data.sources.base import SkippedRecord, Source
from ecg_ray.data.store import DEFAULT_CHUNK_SAMPLES, DEFAULT_CODEC
from ecg_ray.data.store_writer import StoreWriter
from ecg_ray.errors import EcgRayError, RecordError, StoreError

logger = logging.getLogger(__name__)

#: staged batch files live here, inside the store's staging directory, until the write phase ends
BATCH_DIR = ".read-batches"
_LEADS = len(CANONICAL_LEADS)


@dataclass
class RayPrepareStats:
    """How a ``--ray`` prepare ran: tasks per node (node id -> tasks) and the time of each phase."""

    read_tasks: int = 0
    write_tasks: int = 0
    read_nodes: Counter = field(default_factory=Counter)
    write_nodes: Counter = field(default_factory=Counter)
    read_seconds: float = 0.0
    write_seconds: float = 0.0


@dataclass
class _ReadBatch:
    """What a read task returns: per ref, ``(source index, SkippedRecord)`` or
    ``(source index, (record without signal, length, start in the batch file, extra labels))``."""

    entries: list
    node: str


def connect_ray() -> None:
    """Join the cluster in RAY_ADDRESS, or start a local instance (never another cluster this host ran)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", include_dashboard=False, configure_logging=False)


def ray_wanted(flag: bool) -> bool:
    """``--ray``, or RAY_ADDRESS naming a cluster (not "local", which starts a fresh one-node instance)."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    return flag or bool(address and address != "local")


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _batch_file(batch_dir: str, batch: int) -> str:
    return os.path.join(batch_dir, f"{batch:08d}.f32")


def _read_batch(sources: list[Source], jobs: list[tuple[int, object]], batch_dir: str, batch: int) -> _ReadBatch:
    """Read task: read ``jobs`` in order, stage their signals in one file, return metadata only."""
    node = _node_id()
    if not os.path.isdir(batch_dir):
        raise StoreError(f"{batch_dir}: the staging directory is not visible on Ray node {node}; "
                         "prepare --ray needs an --out on a file system every node mounts")
    entries, signals, start = [], [], 0
    for source_index, ref in jobs:
        source = sources[source_index]
        result = read_one((source, ref))
        if isinstance(result, SkippedRecord):
            entries.append((source_index, result))
            continue
        length = int(result.signal.shape[0])
        signals.append(np.ascontiguousarray(result.signal, dtype="<f4"))
        extra = source.extra_label_columns(result)
        entries.append((source_index, (replace(result, signal=None), length, start, extra)))
        start += length
    if signals:
        path = _batch_file(batch_dir, batch)
        # Under a temporary name, then renamed: a retried task never leaves a half-written batch.
        # Plain open (no mkdir): after an abort removed the staging directory this fails instead
        # of recreating it.
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            for signal in signals:
                f.write(signal.tobytes())
        os.replace(tmp, path)
    return _ReadBatch(entries, node)


def _write_chunks(signals_dir: str, batch_dir: str, first_chunk: int, stop_chunk: int, chunk_samples: int,
                  total: int, starts: np.ndarray, lengths: np.ndarray, batches: np.ndarray,
                  batch_starts: np.ndarray) -> tuple[dict[str, str], str]:
    """Write task: chunks [first_chunk, stop_chunk) from the staged records overlapping them.

    Returns the sha256 of each chunk file it wrote (by path in the store) and its node.
    """
    import zarr

    first, stop = first_chunk * chunk_samples, min(stop_chunk * chunk_samples, total)
    buffer = np.zeros((stop - first, _LEADS), dtype=np.float32)
    staged: dict[int, np.ndarray] = {}
    for start, length, batch, batch_start in zip(starts.tolist(), lengths.tolist(), batches.tolist(),
                                                 batch_starts.tolist(), strict=True):
        lo, hi = max(start, first), min(start + length, stop)
        if lo >= hi:
            continue
        if batch not in staged:
            staged[batch] = np.memmap(_batch_file(batch_dir, batch), dtype="<f4", mode="r").reshape(-1, _LEADS)
        source = staged[batch]
        buffer[lo - first:hi - first] = source[batch_start + lo - start:batch_start + hi - start]
    signals = zarr.open_array(signals_dir, mode="r+")
    # Whole chunks only (the last one ends at the array's end): the same bytes as StoreWriter's appends.
    signals[first:stop] = buffer
    checksums = {}
    for chunk in range(first_chunk, stop_chunk):
        key = signals.metadata.encode_chunk_key((chunk, 0))
        path = os.path.join(signals_dir, *key.split("/"))
        if os.path.exists(path):  # a chunk equal to the fill value is not written (as in StoreWriter)
            checksums[f"{Path(signals_dir).name}/{key}"] = _sha256(path)
    return checksums, _node_id()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _batches(sources: list[Source], records_per_task: int) -> list[list[tuple[int, object]]]:
    """Contiguous batches of (source index, ref) in source order."""
    jobs = [(i, ref) for i, source in enumerate(sources) for ref in source.refs()]
    return [jobs[i:i + records_per_task] for i in range(0, len(jobs), records_per_task)]


def _per_task(total: int, cpus: float, *, per_cpu: int, low: int, high: int) -> int:
    """Items per task: about ``per_cpu`` tasks per CPU (load balance), within [low, high]."""
    return int(min(high, max(low, math.ceil(total / max(1.0, cpus * per_cpu)))))


def prepare_on_ray(
    sources: list[Source],
    out: str | Path,
    *,
    fs: float = 100.0,
    on_error: str = "skip",
    exclusions: Exclusions | None = None,
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    codec: str = DEFAULT_CODEC,
    overwrite: bool = False,
    progress: bool = True,
    inputs: list[str | Path] | None = None,
    records_per_task: int | None = None,
    chunks_per_task: int | None = None,
) -> tuple[dict, RayPrepareStats]:
    """``prepare_store`` in Ray tasks: the same store (bit for bit, but the manifest's ``created``).

    Returns the manifest and how the tasks ran. ``records_per_task`` / ``chunks_per_task``
    default to about 8 read and 4 write tasks per cluster CPU (at most 512 records or 16 chunks
    per task, so a task's memory stays small).
    """
    import ray

    exclusions = exclusions or Exclusions()
    all_inputs = check_prepare_request(sources, out, fs=fs, on_error=on_error, exclusions=exclusions,
                                       overwrite=overwrite, inputs=inputs)
    connect_ray()
    cpus = float(ray.cluster_resources().get("CPU", 1))
    total_refs = sum(len(s.refs()) for s in sources)
    records_per_task = records_per_task or _per_task(total_refs, cpus, per_cpu=8, low=16, high=512)
    writer = StoreWriter(out, fs=fs, chunk_samples=chunk_samples, codec=codec, overwrite=overwrite,
                         progress=progress, inputs=tuple(all_inputs))
    stats = RayPrepareStats()
    in_flight: list = []
    try:
        batch_dir = writer.tmp / BATCH_DIR
        batch_dir.mkdir()
        kept = _read_phase(sources, writer, exclusions, on_error, str(batch_dir), records_per_task, total_refs,
                           stats, in_flight, progress)
        chunk_sums = _write_phase(writer, str(batch_dir), kept, cpus, chunks_per_task, stats, in_flight, progress)
        shutil.rmtree(batch_dir)
        manifest = finalize_store(writer, sources, exclusions, on_error, known_checksums=chunk_sums)
    except BaseException as exc:
        _cancel(in_flight)
        writer.abort()
        if isinstance(exc, ray.exceptions.RayError):
            raise EcgRayError(f"prepare --ray stopped, nothing was written to {storage.normalize(out)}: "
                              f"{_task_failure(exc)}") from None
        raise
    logger.info("prepare --ray: %d read tasks on %d node(s), %d write tasks on %d node(s)", stats.read_tasks,
                len(stats.read_nodes), stats.write_tasks, len(stats.write_nodes))
    return manifest, stats


@dataclass
class _Kept:
    """The stored records' places in the staged batch files (8-byte ints: ~24 bytes per record)."""

    lengths: array = field(default_factory=lambda: array("q"))
    batches: array = field(default_factory=lambda: array("q"))
    batch_starts: array = field(default_factory=lambda: array("q"))


def _read_phase(sources, writer: StoreWriter, exclusions: Exclusions, on_error: str, batch_dir: str,
                records_per_task: int, total_refs: int, stats: RayPrepareStats, in_flight: list,
                progress: bool) -> _Kept:
    import ray

    # SPREAD: the tasks go to every node of the cluster rather than filling the driver's node first.
    read = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_read_batch)
    sources_ref = ray.put(sources)  # once into the object store, not once per task
    batches = _batches(sources, records_per_task)
    refs = [read.remote(sources_ref, jobs, batch_dir, b) for b, jobs in enumerate(batches)]
    in_flight[:] = refs
    batch_of = {ref: b for b, ref in enumerate(refs)}
    finished: dict[int, _ReadBatch] = {}
    kept = _Kept()
    first_unmapped: dict[str, tuple[str, str, str]] = {}
    next_batch, pending = 0, list(refs)
    started = time.perf_counter()
    bar = tqdm(total=total_refs, desc=f"prepare {storage.name(writer.out)} (ray: read)", unit="rec",
               disable=not progress, mininterval=0.5, dynamic_ncols=True)
    with bar:
        while next_batch < len(batches):
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5) if pending else ([], [])
            for ref in ready:
                batch = ray.get(ref)
                finished[batch_of[ref]] = batch
                stats.read_nodes[batch.node] += 1
                bar.update(len(batch.entries))
            # Source order, whatever order the tasks finish in: the pool path's order exactly.
            while next_batch in finished:
                for source_index, item in finished.pop(next_batch).entries:
                    if isinstance(item, SkippedRecord):
                        if on_error == "fail":
                            raise RecordError(item.id, item.file, item.reason)
                        writer.skip(item)
                        continue
                    record, length, batch_start, extra = item
                    reason = exclusions.reason(record)
                    if reason is not None:
                        writer.exclude(reason)
                        continue
                    writer.add_written(record, length, extra)
                    kept.lengths.append(length)
                    kept.batches.append(next_batch)
                    kept.batch_starts.append(batch_start)
                    for text in record.unmapped_labels:
                        first_unmapped.setdefault(text, (record.id, record.file, sources[source_index].kind))
                next_batch += 1
            bar.set_postfix(skipped=len(writer.skipped), excluded=sum(writer.excluded.values()), refresh=False)
    in_flight.clear()
    stats.read_tasks = len(batches)
    stats.read_seconds = time.perf_counter() - started
    log_unmapped(first_unmapped, writer.label_warnings())
    return kept


def _write_phase(writer: StoreWriter, batch_dir: str, kept: _Kept, cpus: float, chunks_per_task: int | None,
                 stats: RayPrepareStats, in_flight: list, progress: bool) -> dict[str, str]:
    import ray

    lengths = np.frombuffer(kept.lengths, dtype=np.int64)
    if not len(lengths):
        return {}  # finalize refuses an empty store, naming what was skipped and excluded
    ends = np.cumsum(lengths)
    starts = ends - lengths
    total = int(ends[-1])
    batches = np.frombuffer(kept.batches, dtype=np.int64)
    batch_starts = np.frombuffer(kept.batch_starts, dtype=np.int64)
    writer.size_signals(total)
    chunk = writer.chunk_samples
    n_chunks = math.ceil(total / chunk)
    chunks_per_task = chunks_per_task or _per_task(n_chunks, cpus, per_cpu=4, low=1, high=16)
    write = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_write_chunks)
    refs, chunks_of = [], {}
    for first_chunk in range(0, n_chunks, chunks_per_task):
        stop_chunk = min(first_chunk + chunks_per_task, n_chunks)
        first, stop = first_chunk * chunk, min(stop_chunk * chunk, total)
        # The records overlapping [first, stop): only their places travel to the task.
        lo, hi = np.searchsorted(ends, first, side="right"), np.searchsorted(starts, stop, side="left")
        refs.append(write.remote(writer.signals_location, batch_dir, first_chunk, stop_chunk, chunk, total,
                                 starts[lo:hi], lengths[lo:hi], batches[lo:hi], batch_starts[lo:hi]))
        chunks_of[refs[-1]] = stop_chunk - first_chunk
    in_flight[:] = refs
    checksums: dict[str, str] = {}
    started = time.perf_counter()
    pending = list(refs)
    with tqdm(total=n_chunks, desc=f"prepare {storage.name(writer.out)} (ray: write)", unit="chunk",
              disable=not progress, mininterval=0.5, dynamic_ncols=True) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            for ref in ready:
                sums, node = ray.get(ref)
                checksums.update(sums)
                stats.write_nodes[node] += 1
                bar.update(chunks_of[ref])
    in_flight.clear()
    stats.write_tasks = len(refs)
    stats.write_seconds = time.perf_counter() - started
    return checksums


def _cancel(refs: list) -> None:
    """Stop the tasks still running and wait for them, so none writes after the staging directory is gone."""
    if not refs:
        return
    import ray

    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception:  # already finished, or its node is gone
            pass
    try:
        ray.wait(refs, num_returns=len(refs), timeout=30)
    except Exception:
        pass


def _task_failure(exc: BaseException) -> str:
    """One line for a failed task: its original exception where Ray kept one."""
    cause = getattr(exc, "cause", None)
    shown = cause if isinstance(cause, BaseException) else exc
    text = str(shown).strip().splitlines()
    last = text[-1] if text else ""
    return f"{type(shown).__name__}: {' '.join(last.split())}"
