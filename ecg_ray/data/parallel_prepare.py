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
(``ecg_ray.data.staging``).

Where the tasks write: a local ``--out`` is staged in its usual staging directory, which must be on
a file system every node mounts (a task on a node that cannot see it stops the run, naming the
node). A cloud ``--out`` is staged in a prefix beside the target (``PARENT/.NAME.partial-XXXXXXXX/``):
read tasks PUT their batch files there, write tasks fetch the rows they need with ranged GETs and
PUT the chunk files there, and ``finalize`` copies the chunks into place server-side (no chunk byte
passes through the driver), uploads the tables and writes the manifest last. The driver's disk
holds only the tables. The copy costs one request per chunk file (6 MiB each by default) and keeps
the old store readable until the new one is complete.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ecg_ray import storage
from ecg_ray.data.prepare import Exclusions, check_prepare_request, finalize_store, log_unmapped
from ecg_ray.data.prepare_tasks import BATCH_DIR, ReadBatch, read_batch, write_chunks
from ecg_ray.data.sources.base import SkippedRecord, Source
from ecg_ray.data.store import DEFAULT_CHUNK_SAMPLES, DEFAULT_CODEC, SIGNALS
from ecg_ray.data.store_writer import StoreWriter
from ecg_ray.errors import EcgRayError, RecordError

logger = logging.getLogger(__name__)


@dataclass
class RayPrepareStats:
    """How a ``--ray`` prepare ran: tasks per node (node id -> tasks) and the time of each phase."""

    read_tasks: int = 0
    write_tasks: int = 0
    read_nodes: Counter = field(default_factory=Counter)
    write_nodes: Counter = field(default_factory=Counter)
    read_seconds: float = 0.0
    write_seconds: float = 0.0


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
        if writer.remote:
            # Batch files and chunk files go to a staging prefix beside the cloud target: every node
            # reaches it, and no machine holds the store (the driver's disk gets only the tables).
            prefix = writer.stage_chunks_remotely()
            batch_dir, signals_location = storage.join(prefix, BATCH_DIR), storage.join(prefix, SIGNALS)
        else:
            batch_dir, signals_location = str(writer.tmp / BATCH_DIR), writer.signals_location
            os.mkdir(batch_dir)
        kept = _read_phase(sources, writer, exclusions, on_error, batch_dir, records_per_task, total_refs,
                           stats, in_flight, progress)
        writer.record_chunks(_write_phase(writer, signals_location, batch_dir, kept, cpus, chunks_per_task, stats,
                                          in_flight, progress))
        if writer.remote:
            storage.delete_dir(batch_dir)
        else:
            shutil.rmtree(batch_dir)
        manifest = finalize_store(writer, sources, exclusions, on_error)
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
    read = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(read_batch)
    sources_ref = ray.put(sources)  # once into the object store, not once per task
    batches = _batches(sources, records_per_task)
    refs = [read.remote(sources_ref, jobs, batch_dir, b) for b, jobs in enumerate(batches)]
    in_flight[:] = refs
    batch_of = {ref: b for b, ref in enumerate(refs)}
    finished: dict[int, ReadBatch] = {}
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


def _write_phase(writer: StoreWriter, signals_location: str, batch_dir: str, kept: _Kept, cpus: float,
                 chunks_per_task: int | None, stats: RayPrepareStats, in_flight: list,
                 progress: bool) -> dict[str, tuple[str, int]]:
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
    write = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(write_chunks)
    # The array's zarr.json, so that a task encoding chunks for a cloud prefix uses the store's exact metadata.
    array_metadata = (writer.tmp / SIGNALS / "zarr.json").read_bytes()
    refs, chunks_of = [], {}
    for first_chunk in range(0, n_chunks, chunks_per_task):
        stop_chunk = min(first_chunk + chunks_per_task, n_chunks)
        first, stop = first_chunk * chunk, min(stop_chunk * chunk, total)
        # The records overlapping [first, stop): only their places travel to the task.
        lo, hi = np.searchsorted(ends, first, side="right"), np.searchsorted(starts, stop, side="left")
        refs.append(write.remote(signals_location, array_metadata, batch_dir, first_chunk, stop_chunk, chunk, total,
                                 starts[lo:hi], lengths[lo:hi], batches[lo:hi], batch_starts[lo:hi]))
        chunks_of[refs[-1]] = stop_chunk - first_chunk
    in_flight[:] = refs
    checksums: dict[str, tuple[str, int]] = {}
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
