"""``ecg-ray embed``: an encoder over every selected record of a store, on a Ray cluster, into Parquet.

Ray Data runs it: read tasks over contiguous runs of the selected records cut the encoder's
windows (:mod:`ecg_ray.embedding.reading`), ``map_batches`` with a pool of :class:`EmbedWorker`
actors (one GPU each where the cluster has GPUs, CPU otherwise) runs the encoder, and the driver
writes the rows in store order (``preserve_order``) into one Parquet file
(:mod:`ecg_ray.embedding.parquet`).

Pooling as evaluation does it: a record's embedding is the mean of its windows' embeddings
(``pool="mean"``), or every window is a row (``pool="windows"``). A batch may end inside a
record, so the actors return per-record partial sums (float64) and window counts, and the driver
adds the two parts of a record that straddles a batch boundary before dividing: the result is
``encoder(windows).mean(0)`` to float32 rounding.

Driver memory: the plan (4 int64 per selected record), the records' id / dataset / fold / patient
columns (~50 bytes per record) and one row group of output (16k rows) at a time.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import numpy as np
import pyarrow as pa

from ecg_ray.data.store import EcgStore
from ecg_ray.embedding import parquet
from ecg_ray.embedding.reading import (
    ReadSpec,
    Windowing,
    make_datasource,
    records_per_task,
    resampled_length,
)
from ecg_ray.embedding.source import EncoderSource
from ecg_ray.errors import ConfigError

logger = logging.getLogger(__name__)

#: ids of too-short records shown in messages and the summary (the file's metadata lists them all)
SHOWN_IDS = 10
#: seconds between progress lines
PROGRESS_EVERY_S = 5.0


class EmbedWorker:
    """A Ray Data actor: windows -> encoder -> per-record partial sums (``mean``) or per-window rows."""

    def __init__(self, encoder_ref: list, pool: str, batch_size: int, use_gpu: bool, threads: int):
        import ray
        import torch

        torch.set_num_threads(max(1, threads))
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        # The driver built the encoder once; every actor gets the same module (weights included).
        self.encoder = ray.get(encoder_ref[0]).to(self.device).eval()
        self.pool, self.batch_size = pool, batch_size

    def _forward(self, signal: np.ndarray) -> np.ndarray:
        """(n, 12, T) float32 (or an object array of (12, T_i) records) -> (n, dim) float32."""
        import torch

        if signal.dtype == object:  # whole records of different lengths: one pass per length
            lengths = np.array([s.shape[-1] for s in signal])
            out: np.ndarray | None = None
            for length in np.unique(lengths).tolist():
                rows = np.flatnonzero(lengths == length)
                part = self._forward(np.stack([signal[r] for r in rows]).astype(np.float32))
                out = np.empty((len(signal), part.shape[1]), np.float32) if out is None else out
                out[rows] = part
            return out
        parts = []
        with torch.no_grad():
            for k in range(0, len(signal), self.batch_size):
                # a writable contiguous copy: Ray's batches are read-only views of the block
                x = torch.from_numpy(np.require(signal[k:k + self.batch_size], np.float32, ["C", "W"]))
                parts.append(self.encoder(x.to(self.device)).float().cpu().numpy())
        return np.concatenate(parts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        owner = np.asarray(batch["record_index"], dtype=np.int64)
        embedding = self._forward(batch["signal"])
        if self.pool == "windows":
            return {"record_index": owner, "window_index": batch["window_index"], "start": batch["start"],
                    "embedding": embedding}
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # a record's windows are consecutive
        return {"record_index": owner[first], "windows": np.diff(np.r_[first, len(owner)]).astype(np.int64),
                "embedding_sum": np.add.reduceat(embedding.astype(np.float64), first, axis=0)}


def _resources(workers: int | None, gpus_per_worker: float | None) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) from the flags and the cluster."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus > 0 else 0.0
    if gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
    if gpus_per_worker > 0 and gpus == 0:
        raise ConfigError(f"--gpus-per-worker {gpus_per_worker}: the Ray cluster has no GPU")
    if workers is None:
        workers = max(1, int(gpus / gpus_per_worker)) if gpus_per_worker > 0 else max(1, int(cpus) - 1)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    # Leave a CPU to the read tasks: actors holding every CPU would starve the stream feeding them.
    cpus_per_actor = 1.0 if cpus >= workers + 1 or gpus_per_worker > 0 else max(0.25, (cpus - 1) / workers)
    return workers, gpus_per_worker, cpus_per_actor


def plan_windows(store: EcgStore, indices: np.ndarray, source: EncoderSource, window: int | None,
                 stride: int | None) -> tuple[Windowing, np.ndarray, np.ndarray]:
    """(windowing, resampled lengths, windows per record) of ``indices`` for ``source``'s rate.

    Window and stride default to the evaluation windows the export records, else the encoder's
    training crop and half of it; window 0 is the whole record (at least the training crop long).
    """
    if list(source.leads) != store.leads:
        raise ConfigError(f"the encoder reads leads {list(source.leads)}, the store {store.path} holds {store.leads}")
    if window is None and source.window is not None:
        window, stride = source.window, source.stride if stride is None else stride
    window = source.input_length if window is None else int(window)
    if window < 0:
        raise ConfigError(f"--window must be >= 0 (0 = whole record), got {window}")
    stride = (max(1, window // 2) if window else 0) if stride is None else int(stride)
    if window and stride < 1:
        raise ConfigError(f"--stride must be >= 1, got {stride}")
    windowing = Windowing(window=window, stride=stride, min_length=source.input_length)
    lengths = resampled_length(store.column("length")[indices], store.fs, source.fs)
    return windowing, lengths, windowing.counts(lengths)


def embed_store(source: EncoderSource, store: EcgStore | str, out: str, *, folds: list[int] | None = None,
                pool: str = "mean", window: int | None = None, stride: int | None = None, batch_size: int = 256,
                workers: int | None = None, gpus_per_worker: float | None = None, overwrite: bool = False,
                progress: bool = True, records_per_read: int | None = None,
                leads: list[str] | None = None) -> dict[str, Any]:
    """Embed every record of ``store`` (in ``folds``) with ``source`` into the Parquet file ``out``; a summary.

    ``leads`` keeps only those leads (the others zeroed, as ``data.leads`` in evaluation).
    ``records_per_read`` (None = about 64 MiB of signal per read task) sets the records of each read task.
    """
    from ecg_ray.data.leads import kept_leads, lead_subset
    from ecg_ray.data.sampling import select_records
    from ecg_ray.data.stream import task_bounds

    if pool not in parquet.POOLS:
        raise ConfigError(f"--pool must be one of {', '.join(parquet.POOLS)}, got {pool!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    lead_subset(leads, key="leads")  # a bad name fails here
    store = store if isinstance(store, EcgStore) else EcgStore(store)
    parquet.check_target(out, overwrite)  # before anything heavy starts
    selected = np.sort(select_records(store, folds=folds)).astype(np.int64)
    windowing, lengths_out, counts = plan_windows(store, selected, source, window, stride)
    short = selected[counts == 0]
    short_ids = [str(i) for i in store.take("id", short)] if len(short) else []
    keep = counts > 0
    indices, counts, lengths_out = selected[keep], counts[keep], lengths_out[keep]
    if len(indices) == 0:
        raise ConfigError(f"no record of {store.path} is long enough for one window of {windowing.window or source.input_length} "
                          f"samples at {source.fs:g} Hz ({len(short)} too short)")
    offsets = store.column("offset")[indices].astype(np.int64)
    lengths_in = store.column("length")[indices].astype(np.int64)
    per_task = records_per_read or records_per_task(lengths_in, lengths_out, counts, windowing)
    bounds = task_bounds(len(indices), per_task)
    min_length = windowing.window or windowing.min_length
    too_short = {"count": len(short_ids), "first_ids": short_ids[:SHOWN_IDS], "min_samples": int(min_length),
                 "min_seconds": round(min_length / source.fs, 4)}
    if short_ids:
        logger.warning("%d record(s) shorter than %d samples at %g Hz are not embedded: %s%s", len(short_ids),
                       min_length, source.fs, short_ids[:5], " ..." if len(short_ids) > 5 else "")
    encoder = source.build()
    dim = int(encoder.feature_dim)
    if windowing.window == 0 and not encoder.accepts_any_length:
        raise ConfigError(f"--window 0 (whole records): encoder {source.name} does not accept inputs of any length")
    kept = kept_leads(leads)

    from ecg_ray.ray_cluster import ensure_ray

    ensure_ray()
    import ray

    actors, gpus, cpus = _resources(workers, gpus_per_worker)
    meta = {"format": parquet.FORMAT, "format_version": parquet.FORMAT_VERSION,
            "store": {"path": str(store.path), "version": store.version, "fs": store.fs, "records": len(store)},
            "encoder": source.describe(), "dim": dim, "pool": pool, "window": windowing.window,
            "stride": windowing.stride, "folds": list(folds) if folds else None,
            "leads": list(lead_subset(leads) or store.leads), "records": int(len(indices)),
            "windows": int(counts.sum()), "too_short": {**too_short, "ids": short_ids}}
    spec = ReadSpec(store=str(store.path), version=store.version, fs_in=store.fs, fs_out=source.fs,
                    windowing=windowing, kept_leads=None if kept is None else tuple(bool(k) for k in kept))
    width = np.full(len(indices), windowing.window) if windowing.window else lengths_out
    datasource = make_datasource(spec, indices, offsets, lengths_in, counts, bounds, width)
    device = f"{actors} GPU worker(s)" if gpus > 0 else f"{actors} CPU worker(s)"
    _say(progress, f"embed: {len(indices)} records, {int(counts.sum())} windows of "
                   f"{windowing.window or 'whole-record'} samples (stride {windowing.stride}) at {source.fs:g} Hz "
                   f"from {store.path} ({len(short_ids)} too short), {len(bounds) - 1} read task(s), {device}")
    start = time.perf_counter()
    dataset = ray.data.read_datasource(datasource, override_num_blocks=len(bounds) - 1)
    dataset.context.execution_options.preserve_order = True  # rows come back in store order
    encoder_ref = [ray.put(encoder)]  # in a list: the actor fetches it (Ray passes nested refs as they are)
    dataset = dataset.map_batches(
        EmbedWorker, fn_constructor_kwargs={"encoder_ref": encoder_ref, "pool": pool, "batch_size": batch_size,
                                            "use_gpu": gpus > 0, "threads": max(1, int(cpus))},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus or None, num_cpus=cpus)
    metadata = parquet.record_metadata(store, indices)
    file_schema = parquet.schema(dim, pool, meta)
    with parquet.EmbeddingWriter(out, file_schema, overwrite) as writer:
        assemble = _RowAssembler(indices, metadata, file_schema, pool)
        shown = time.perf_counter()
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for table in assemble.add(batch):
                writer.write(table)
            if progress and time.perf_counter() - shown >= PROGRESS_EVERY_S:
                shown = time.perf_counter()
                _say(True, f"embed: {assemble.records_done}/{len(indices)} records "
                           f"({assemble.records_done / (shown - start):.0f} records/s)")
        for table in assemble.finish():
            writer.write(table)
        location = writer.commit()
    seconds = time.perf_counter() - start
    summary = {"records": int(len(indices)), "windows": int(counts.sum()), "dim": dim, "out": location,
               "pool": pool, "rows": writer.rows, "too_short": too_short, "seconds": round(seconds, 3),
               "records_per_s": round(len(indices) / seconds, 1), "windows_per_s": round(int(counts.sum()) / seconds, 1),
               "window": windowing.window, "stride": windowing.stride, "fs": source.fs, "store_fs": store.fs,
               "leads": meta["leads"], "encoder": source.name, "read_tasks": len(bounds) - 1, "workers": actors, "gpus_per_worker": gpus,
               "store": str(store.path)}
    _say(progress, f"embed: {summary['records']} records -> {location} ({summary['records_per_s']:.0f} records/s)")
    return summary


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)


class _RowAssembler:
    """Output rows in store order from the actors' batches; joins a record split over two batches."""

    def __init__(self, indices: np.ndarray, metadata: pa.Table, file_schema: pa.Schema, pool: str):
        self.indices, self.metadata, self.schema, self.pool = indices, metadata, file_schema, pool
        self.records_done = 0  # records written so far = position of the next one in ``indices``
        self._pending: tuple[int, int, np.ndarray] | None = None  # (record_index, windows, sum) of the last record

    def _table(self, positions: np.ndarray, columns: dict[str, pa.Array]) -> pa.Table:
        meta = self.metadata.take(pa.array(positions))
        arrays = [meta.column(n) for n in ("record_id", "dataset", "fold", "patient_id")]
        arrays.append(pa.array(self.indices[positions]))
        arrays += [columns[name] for name in self.schema.names[5:]]  # the pool's own columns, then embedding
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def add(self, batch: dict[str, np.ndarray]) -> list[pa.Table]:
        if not len(batch["record_index"]):
            return []
        if self.pool == "windows":
            owner = np.asarray(batch["record_index"], dtype=np.int64)
            positions = np.searchsorted(self.indices, owner)
            self._check(positions, owner)
            self.records_done = int(positions[-1]) + 1
            return [self._table(positions, {"window_index": pa.array(batch["window_index"].astype(np.int64)),
                                            "start": pa.array(batch["start"].astype(np.int64)),
                                            "embedding": parquet.vectors(batch["embedding"])})]
        owner = np.asarray(batch["record_index"], dtype=np.int64)
        windows = np.asarray(batch["windows"], dtype=np.int64)
        sums = np.asarray(batch["embedding_sum"], dtype=np.float64)
        # Ray Data may join several actor outputs into one block: a record split between two actor
        # batches is then two neighbouring rows, added here.
        first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        if len(first) < len(owner):
            owner, windows, sums = owner[first], np.add.reduceat(windows, first), np.add.reduceat(sums, first, axis=0)
        if self._pending is not None:
            if owner[0] == self._pending[0]:  # the record's first windows came in the previous batch
                windows, sums = windows.copy(), sums.copy()
                windows[0] += self._pending[1]
                sums[0] += self._pending[2]
            else:
                owner = np.r_[self._pending[0], owner]
                windows = np.r_[self._pending[1], windows]
                sums = np.concatenate([self._pending[2][None], sums])
        self._pending = (int(owner[-1]), int(windows[-1]), sums[-1].copy())
        return self._rows(owner[:-1], windows[:-1], sums[:-1])

    def _rows(self, owner: np.ndarray, windows: np.ndarray, sums: np.ndarray) -> list[pa.Table]:
        if not len(owner):
            return []
        positions = np.arange(self.records_done, self.records_done + len(owner))
        self._check(positions, owner)
        self.records_done += len(owner)
        return [self._table(positions, {"windows": pa.array(windows.astype(np.int32)),
                                        "embedding": parquet.vectors(sums / windows[:, None])})]

    def _check(self, positions: np.ndarray, owner: np.ndarray) -> None:
        if positions.max(initial=0) >= len(self.indices) or not np.array_equal(self.indices[positions], owner):
            raise RuntimeError("embedding rows arrived out of store order")  # a bug, not a user error

    def finish(self) -> list[pa.Table]:
        tables = []
        if self._pending is not None:
            owner, windows, total = self._pending
            tables = self._rows(np.array([owner]), np.array([windows]), total[None])
            self._pending = None
        if self.records_done != len(self.indices):
            raise RuntimeError(f"{self.records_done} of {len(self.indices)} records embedded")
        return tables

