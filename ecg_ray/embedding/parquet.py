"""The embeddings file: one Parquet file, its schema, an atomic writer and a reader.

Columns (one row per record, or per window with ``pool: windows``), in store order:

=============== ====================================================================
``record_id``   the store's record id (string)
``dataset``     the record's dataset (string)
``fold``        its fold (int64; null where the store has none)
``patient_id``  its patient (string; null where the store has none)
``record_index`` its index in the store (int64)
``windows``     (per record) how many windows were averaged into its embedding
``window_index`` (per window) the window's position in its record
``start``       (per window) its first sample in the record, at the encoder's rate
``embedding``   ``fixed_size_list<float32>[dim]``
=============== ====================================================================

The file's key-value metadata ``ecg_ray.embeddings`` (JSON) says how it was made: format and
version, store (path, version, rate), encoder (name, file, method, rate, input length), window,
stride, pooling, counts, and every record left out as too short (``too_short``: count, minimum
length, all ids). ``pyarrow.parquet.read_table(EMB)`` reads it; :func:`read_embeddings` also
checks that it is an ecg_ray embeddings file.

Atomic: rows are written to a hidden file beside the target (a local temporary file for a cloud
URI) and renamed into place (uploaded) only after the last row; a failed run removes it.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_ray import storage
from ecg_ray.errors import ConfigError, EcgRayError

METADATA_KEY = b"ecg_ray.embeddings"
FORMAT = "ecg_ray.embeddings"
FORMAT_VERSION = 1
POOLS = ("mean", "windows")
#: rows buffered before a row group is written (a row group of 256-wide float32 vectors is ~16 MiB)
ROW_GROUP_ROWS = 16_384


def schema(dim: int, pool: str, metadata: dict[str, Any]) -> pa.Schema:
    """The columns of an embeddings file of ``dim``-wide vectors (``pool``: mean or windows)."""
    fields = [pa.field("record_id", pa.string()), pa.field("dataset", pa.string()),
              pa.field("fold", pa.int64()), pa.field("patient_id", pa.string()),
              pa.field("record_index", pa.int64())]
    if pool == "windows":
        fields += [pa.field("window_index", pa.int64()), pa.field("start", pa.int64())]
    else:
        fields += [pa.field("windows", pa.int32())]
    fields.append(pa.field("embedding", pa.list_(pa.float32(), dim)))
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata).encode()})


def record_metadata(store, indices: np.ndarray) -> pa.Table:
    """``record_id``, ``dataset``, ``fold``, ``patient_id`` of the records ``indices`` (in that order).

    Reads four columns of ``records.parquet`` (not the signals); a store without ``fold`` or
    ``patient_id`` gives nulls. ~50 bytes per record in memory for PTB-XL-like ids.
    """
    fs, path = storage.filesystem(storage.join(store.path, "records.parquet"))
    present = set(store.record_columns)
    wanted = [c for c in ("id", "dataset", "fold", "patient_id") if c in present]
    table = pq.read_table(path, filesystem=fs, columns=wanted).take(pa.array(np.asarray(indices, dtype=np.int64)))
    n = len(indices)

    def column(name: str, kind: pa.DataType) -> pa.Array:
        if name not in present:
            return pa.nulls(n, kind)
        values = table.column(name).combine_chunks()
        if pa.types.is_floating(values.type) and kind == pa.int64():  # integers with gaps read as float
            floats = values.to_numpy(zero_copy_only=False)
            return pa.array(np.nan_to_num(floats).astype(np.int64), mask=np.isnan(floats))
        return values.cast(kind)

    return pa.table({"record_id": column("id", pa.string()), "dataset": column("dataset", pa.string()),
                     "fold": column("fold", pa.int64()), "patient_id": column("patient_id", pa.string())})


def vectors(embeddings: np.ndarray) -> pa.FixedSizeListArray:
    """(n, dim) float32 -> a fixed-size list array."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1])


def is_embeddings_file(location: str) -> bool:
    try:
        read_metadata(location)
    except EcgRayError:
        return False
    return True


def read_metadata(location: str) -> dict[str, Any]:
    """The ``ecg_ray.embeddings`` metadata of an embeddings file (EcgRayError for anything else)."""
    location = storage.normalize(location)
    if not storage.is_file(location):
        raise EcgRayError(f"{location}: embeddings file not found" if not storage.exists(location)
                          else f"{location}: is a directory, not an embeddings file")
    fs, path = storage.filesystem(location)
    try:
        found = pq.read_schema(path, filesystem=fs).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise EcgRayError(f"{location}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    if METADATA_KEY not in found:
        raise EcgRayError(f"{location}: a Parquet file without ecg_ray embeddings metadata (write one with "
                          "ecg-ray embed)")
    meta = json.loads(found[METADATA_KEY])
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise EcgRayError(f"{location}: embeddings format {meta.get('format')!r} version "
                          f"{meta.get('format_version')} is not one this ecg_ray reads")
    return meta


def read_embeddings(location: str) -> tuple[pa.Table, dict[str, Any]]:
    """(table, metadata) of an embeddings file written by ``ecg-ray embed``."""
    meta = read_metadata(location)
    fs, path = storage.filesystem(storage.normalize(location))
    return pq.read_table(path, filesystem=fs), meta


def check_target(out: str, overwrite: bool) -> str:
    """``out`` normalized, if an embeddings file may be written there (an existing one only with ``overwrite``)."""
    from ecg_ray.overwrite import check_file_target

    out = storage.normalize(out)
    if storage.is_file(out) and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it (only an ecg_ray embeddings file is replaced)")
    return check_file_target(out, replaceable=is_embeddings_file, what="an ecg_ray embeddings file")


#: a staging file beside a local target whose writer may still run (its PID lives) is removed after this long
STALE_AFTER_S = 24 * 3600.0


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove staging files of earlier runs to ``target`` that died before renaming them (killed, out of
    memory): those whose writer PID no longer runs here, or unchanged for :data:`STALE_AFTER_S` (a PID
    reused since, or a writer on another machine sharing the directory). Returns what was removed."""
    import time

    removed = []
    for path in target.parent.glob(f".{target.name}.tmp-*-*"):
        try:
            pid = int(path.name[len(f".{target.name}.tmp-"):].split("-", 1)[0])
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except (ValueError, PermissionError):
            alive = True  # not our naming, or another user's live process: only the age rule applies
        try:
            if not alive or time.time() - path.stat().st_mtime > STALE_AFTER_S:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            pass
    return removed


class EmbeddingWriter:
    """Rows into a staging file, moved to ``out`` by :meth:`commit`; :meth:`abort` leaves nothing.

    Use as a context manager: leaving the block by an exception aborts.
    """

    def __init__(self, out: str, file_schema: pa.Schema, overwrite: bool):
        self.out = check_target(out, overwrite)
        self.overwrite = overwrite
        self.schema = file_schema
        if storage.is_uri(self.out):
            self._tmpdir = tempfile.TemporaryDirectory(prefix="ecg-ray-embed-")
            self.staging = Path(self._tmpdir.name) / "embeddings.parquet"
        else:
            self._tmpdir = None
            target = Path(self.out)
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(target)
            self.staging = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self._writer = pq.ParquetWriter(self.staging, file_schema)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending).replace_schema_metadata(self.schema.metadata)
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
            self.rows += table.num_rows
        self._pending, self._pending_rows = [], 0

    def commit(self) -> str:
        self._flush()
        self._writer.close()
        check_target(self.out, self.overwrite)  # nothing else appeared there meanwhile
        if self._tmpdir is not None:
            storage.upload_file(self.staging, self.out)  # the object appears only when complete
            self._tmpdir.cleanup()
        else:
            os.replace(self.staging, self.out)
        return self.out

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
            else:
                self.staging.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abort()
