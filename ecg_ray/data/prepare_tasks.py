"""The two Ray tasks of ``prepare --ray`` (orchestrated by ``ecg_ray.data.parallel_prepare``).

- :func:`read_batch` reads a contiguous batch of source refs with ``prepare.read_one`` (the
  process pool's own call), stages the batch's standardized signals as one raw float32 file
  (``.read-batches/NNNNNNNN.f32``) and returns metadata only.
- :func:`write_chunks` owns a range of whole chunks of ``signals``: it gathers the staged rows
  that overlap them (one read, or one ranged GET, per batch file), encodes them with the store's
  own zarr metadata and returns each chunk file's sha256 and size.

Both run where the destination is: a local ``--out`` (its staging directory, which every node
must mount) or a cloud ``--out``, where the batch files and chunk files go to a staging prefix
beside the target and no machine ever holds more than a task's share of the signals.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ecg_ray import storage
from ecg_ray.data.prepare import read_one
from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.data.sources.base import SkippedRecord, Source
from ecg_ray.data.store import SIGNALS
from ecg_ray.errors import StoreError

#: staged batch files live here, inside the store's staging directory or prefix, until the write phase ends
BATCH_DIR = ".read-batches"
LEADS = len(CANONICAL_LEADS)
_ROW_BYTES = LEADS * 4


@dataclass
class ReadBatch:
    """What a read task returns: per ref, ``(source index, SkippedRecord)`` or
    ``(source index, (record without signal, length, start in the batch file, extra labels))``."""

    entries: list
    node: str


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def batch_file(batch_dir: str, batch: int) -> str:
    return storage.join(batch_dir, f"{batch:08d}.f32")


def read_batch(sources: list[Source], jobs: list[tuple[int, object]], batch_dir: str, batch: int) -> ReadBatch:
    """Read task: read ``jobs`` in order, stage their signals in one file, return metadata only."""
    node = node_id()
    if not storage.is_uri(batch_dir) and not os.path.isdir(batch_dir):
        raise StoreError(f"{batch_dir}: the staging directory is not visible on Ray node {node}; "
                         "prepare --ray needs an --out on a file system every node mounts (or a cloud --out)")
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
        # Atomic (temporary name + rename, or one object PUT): a retried task never leaves half a batch.
        storage.write_blocks((signal.tobytes() for signal in signals), batch_file(batch_dir, batch))
    return ReadBatch(entries, node)


def _batch_rows(batch_dir: str, batch: int, first: int, stop: int) -> np.ndarray:
    """Rows [first, stop) of a staged batch file: a local read, or one ranged GET."""
    location = batch_file(batch_dir, batch)
    if storage.is_uri(location):
        data = storage.read_range(location, first * _ROW_BYTES, (stop - first) * _ROW_BYTES)
        return np.frombuffer(data, dtype="<f4").reshape(-1, LEADS)
    rows = np.memmap(location, dtype="<f4", mode="r").reshape(-1, LEADS)
    return np.array(rows[first:stop])


def assemble(batch_dir: str, first: int, stop: int, starts: np.ndarray, lengths: np.ndarray,
             batches: np.ndarray, batch_starts: np.ndarray) -> np.ndarray:
    """Samples [first, stop) of ``signals`` from the staged records overlapping them."""
    buffer = np.zeros((stop - first, LEADS), dtype=np.float32)
    lo = np.maximum(starts, first)
    hi = np.minimum(starts + lengths, stop)
    inside = lo < hi
    source_lo = batch_starts + (lo - starts)
    source_hi = batch_starts + (hi - starts)
    for batch in np.unique(batches[inside]).tolist():
        rows = np.flatnonzero(inside & (batches == batch))
        # One read per batch file: its kept records are contiguous but for excluded ones between them.
        block_first, block_stop = int(source_lo[rows].min()), int(source_hi[rows].max())
        block = _batch_rows(batch_dir, batch, block_first, block_stop)
        for row in rows.tolist():
            buffer[lo[row] - first:hi[row] - first] = block[source_lo[row] - block_first:source_hi[row] - block_first]
    return buffer


def write_chunks(signals_location: str, array_metadata: bytes, batch_dir: str, first_chunk: int, stop_chunk: int,
                 chunk_samples: int, total: int, starts: np.ndarray, lengths: np.ndarray, batches: np.ndarray,
                 batch_starts: np.ndarray) -> tuple[dict[str, tuple[str, int]], str]:
    """Write task: chunks [first_chunk, stop_chunk) of ``signals``.

    ``signals_location`` is the staged array (local) or where its chunk files go (a cloud prefix's
    ``signals``); ``array_metadata`` is the array's ``zarr.json``, so the chunks are encoded exactly
    as ``StoreWriter`` encodes them. Returns ``{path in the store: (sha256, bytes)}`` for each chunk
    file written (a chunk equal to the fill value is not written, as in ``StoreWriter``) and the node.
    """
    import zarr

    first, stop = first_chunk * chunk_samples, min(stop_chunk * chunk_samples, total)
    buffer = assemble(batch_dir, first, stop, starts, lengths, batches, batch_starts)
    with tempfile.TemporaryDirectory(prefix="ecg_ray-chunks-") as scratch:
        remote = storage.is_uri(signals_location)
        array_dir = os.path.join(scratch, SIGNALS) if remote else signals_location
        if remote:
            # Encoded into a scratch copy of the array (its metadata only), then uploaded chunk by chunk.
            os.makedirs(array_dir)
            Path(array_dir, "zarr.json").write_bytes(array_metadata)
        signals = zarr.open_array(array_dir, mode="r+")
        # Whole chunks only (the last one ends at the array's end): the same bytes as StoreWriter's appends.
        signals[first:stop] = buffer
        written = {}
        for chunk in range(first_chunk, stop_chunk):
            key = signals.metadata.encode_chunk_key((chunk, 0))
            path = os.path.join(array_dir, *key.split("/"))
            if not os.path.exists(path):
                continue
            written[f"{SIGNALS}/{key}"] = (_sha256(path), os.path.getsize(path))
            if remote:
                storage.upload_file(path, storage.join(signals_location, key))
    return written, node_id()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
