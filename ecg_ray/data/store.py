"""The prepared corpus on disk: one zarr v3 store + Parquet tables + a JSON manifest.

Layout of ``STORE/``::

    zarr.json            zarr v3 root group
    signals/             zarr array (total_samples, 12) float32 mV; records concatenated in time,
                         each kept whole at its true length (no truncation or padding)
    records.parquet      one row per record: id, dataset, file, offset, length, fs_original,
                         fold, patient_id, age, sex, ... (offset/length index into ``signals``)
    labels.parquet       one uint8 column per label (the store's label names, then derived views)
    manifest.json        written last: schema version, rate, lead order, label names and views,
                         sources, counts, skipped records with reasons, exclusions, label
                         warnings (texts kept verbatim as label names), checksums

Concatenating records along time (channels last) makes a group of consecutive records one
contiguous slice, so a stream reads a few large chunks and cuts crops with one strided view.

This module reads stores (:class:`EcgStore`) and holds the layout's names; ``store_writer.py``
writes them. Creation is atomic: everything is written into a hidden sibling directory and
renamed into place only after the manifest (with checksums of every file) is complete. A store can live in cloud
storage (``s3://bucket/stores/ptbxl``): it is then prepared in a local staging directory and
uploaded with the manifest last, and readers treat a store without a manifest as incomplete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import zarr

from ecg_ray import storage
from ecg_ray.data.integrity import ChunkVerifier, chunk_verifier, store_version, verifying_zarr_store
from ecg_ray.errors import StoreError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
RECORDS_TABLE = "records.parquet"
LABELS_TABLE = "labels.parquet"
SIGNALS = "signals"
# The columns of records.parquet every reader needs: where each record lies in ``signals``.
INDEX_COLUMNS = ("offset", "length")

# 131072 samples x 12 leads x 4 bytes = 6 MiB per chunk: large enough that per-chunk overhead
# (and per-object latency on cloud storage) is small, small enough to stream.
DEFAULT_CHUNK_SAMPLES = 131_072
CODECS = ("none", "lz4", "zstd")
# Chosen by bench/store_codec.py: see bench/RESULTS.md.
DEFAULT_CODEC = "none"


def checksum_files(root: str | Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (local or cloud) except the manifest, by relative POSIX path."""
    out = {}
    for rel, _ in storage.list_files(root):
        if PurePosixPath(rel).name == MANIFEST:
            continue
        digest = hashlib.sha256()
        with storage.open_input(storage.join(root, rel)) as f:
            for block in iter(lambda f=f: f.read(1 << 22), b""):
                digest.update(block)
        out[rel] = digest.hexdigest()
    return out


def directory_bytes(root: str | Path) -> int:
    return int(sum(size for _, size in storage.list_files(root)))


class EcgStore:
    """A prepared store opened for reading (per-record metadata read column by column, signals lazily).

    Opening reads only ``offset`` and ``length`` of ``records.parquet`` (16 bytes per record): the
    stream, the evaluation and every training worker need those and little else, while the whole
    table (ids, files, patients as Python strings) costs ~170 bytes per record, 1.7 GB per process
    at 10M records. Other columns are read when asked for: :meth:`column` keeps one (numbers as
    numpy, strings dictionary-encoded), :meth:`take` reads values of a few records and keeps
    nothing (ids for messages), :attr:`records` reads and keeps the whole table for callers that
    want every column of it. The on-disk format is unchanged.

    ``tables`` (default) reads those two columns and checks that ``labels.parquet`` is readable
    at open, so a damaged table fails here, in one line naming the file, before anything starts;
    ``tables=False`` opens on the manifest alone (``inspect --verify`` must check a store whose
    tables are broken) and reads the tables when first used.
    """

    def __init__(self, path: str | Path, *, tables: bool = True):
        # A location string: an absolute local path or a URI (s3://bucket/stores/ptbxl).
        self.path = storage.normalize(path)
        manifest_file = storage.join(self.path, MANIFEST)
        if not storage.is_dir(self.path):
            found = "is a file, not a store directory" if storage.is_file(self.path) else "no such store directory"
            raise StoreError(f"{self.path}: {found}")
        if not storage.exists(manifest_file):
            raise StoreError(f"{self.path}: no {MANIFEST}; not an ecg_ray store, or an interrupted prepare")
        try:
            self.manifest = json.loads(storage.read_text(manifest_file))
        except json.JSONDecodeError as exc:
            raise StoreError(f"{manifest_file}: corrupt manifest ({exc})") from None
        if self.manifest.get("format") != "ecg_ray.store":
            raise StoreError(f"{manifest_file}: not an ecg_ray store manifest")
        version = self.manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema version {version}, this ecg_ray reads "
                             f"{SCHEMA_VERSION}; prepare the store again")
        self._records: pd.DataFrame | None = None
        # Columns of records.parquet read one at a time (while the whole table is not read).
        self._columns: dict[str, np.ndarray | pd.Categorical] = {}
        self._codes: dict[str, tuple[np.ndarray, int]] = {}  # value_codes(): string columns as numbers only
        self._records_schema = None  # (rows, column names, Arrow schema) from the footer, read once
        self._labels: pd.DataFrame | None = None
        self._signals: zarr.Array | None = None
        if tables:
            self._read_columns(INDEX_COLUMNS)
            self._table_rows(LABELS_TABLE)  # reads the footer only, not the labels

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_signals"] = None  # an open array holds a file descriptor; reopened on demand
        return state

    @property
    def records(self) -> pd.DataFrame:
        """The whole records table (``records.parquet``), read on first use and kept.

        ~170 bytes per record in memory: paths that need only some columns use :meth:`column`.
        """
        if self._records is None:
            self._records = self._read_table(RECORDS_TABLE)
            self._columns.clear()  # the table holds them all; one copy, and edits to it are seen
            self._codes.clear()
        return self._records

    @records.setter
    def records(self, table: pd.DataFrame) -> None:
        self._records = table
        self._columns.clear()
        self._codes.clear()

    @property
    def record_columns(self) -> tuple[str, ...]:
        """Column names of the records table (from its Parquet footer; no column is read)."""
        if self._records is not None:
            return tuple(self._records.columns)
        return self._records_footer()[1]

    def has_column(self, name: str) -> bool:
        return name in self.record_columns

    def column(self, name: str) -> np.ndarray | pd.Categorical:
        """One column of the records table for every record, read on first use and kept.

        Numbers come as a numpy array (an integer column with missing values as float with NaN, as
        pandas reads it); strings as a ``pd.Categorical`` read dictionary-encoded (a few bytes per
        record for repeated values such as ``dataset``). Unique strings (``id``, ``file``) cost as
        much as the whole table: read the few needed with :meth:`take`. ``KeyError`` for a column
        the table does not have, as ``records[name]`` raises.
        """
        if self._records is not None:
            return self._records[name].to_numpy()
        if name not in self._columns:
            self._read_columns([name])
        return self._columns[name]

    def value_codes(self, name: str) -> tuple[np.ndarray, int]:
        """``(codes, distinct)``: an int32 per record numbering its value of string column ``name`` (-1 where
        missing), and how many distinct values there are; the values themselves are not kept.

        For columns whose values are nearly all distinct (``patient_id`` in a corpus of one record per
        patient) this costs 4 bytes per record, where :meth:`column`'s categories would keep every string
        (~160 bytes per record at 1M records). Read on first use and kept.
        """
        import pandas as pd
        import pyarrow as pa

        if name in self._codes:
            return self._codes[name]
        if self._records is not None or name in self._columns:
            values = self.column(name)
            if isinstance(values, pd.Categorical):
                codes, distinct = np.asarray(values.codes, dtype=np.int32), len(values.categories)
            else:
                codes, uniques = pd.factorize(np.asarray(values))
                codes, distinct = codes.astype(np.int32), len(uniques)
        else:
            table = self._read_parquet_columns([name], dictionary=True)
            column = table.column(name)
            del table
            if not pa.types.is_dictionary(column.type):
                raise TypeError(f"{name} is not a string column")
            column = column.unify_dictionaries()  # one numbering across the file's row groups
            distinct = len(column.chunk(0).dictionary) if column.num_chunks else 0
            codes = np.concatenate([chunk.indices.fill_null(-1).to_numpy().astype(np.int32, copy=False)
                                    for chunk in column.chunks]) if column.num_chunks else np.empty(0, np.int32)
            del column
            pa.default_memory_pool().release_unused()
        codes.flags.writeable = False
        self._codes[name] = (codes, distinct)
        return self._codes[name]

    def take(self, name: str, indices: np.ndarray) -> list:
        """Values of one column for the records ``indices`` (in that order), without keeping the column."""
        import pyarrow as pa

        indices = np.asarray(indices, dtype=np.int64)
        if self._records is not None or name in self._columns:
            return np.asarray(self.column(name))[indices].tolist()
        table = self._read_parquet_columns([name], dictionary=False)
        values = table.column(name).take(pa.array(indices)).to_pylist()
        del table
        pa.default_memory_pool().release_unused()
        return values

    def metadata_bytes(self) -> int:
        """Bytes of per-record metadata this store holds in memory (the whole table, or the columns read)."""
        if self._records is not None:
            return int(self._records.memory_usage(deep=True, index=False).sum())
        return int(sum(c.nbytes for c in self._columns.values()))

    def _records_footer(self):
        """(rows, column names, Arrow schema) of ``records.parquet``, from its footer (read once)."""
        if self._records_schema is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            fs, path = storage.filesystem(storage.join(self.path, RECORDS_TABLE))
            try:
                metadata = pq.read_metadata(path, filesystem=fs)
                schema = metadata.schema.to_arrow_schema()
            except (pa.ArrowException, ValueError, OSError) as exc:
                raise self._table_error(RECORDS_TABLE, exc) from None
            self._records_schema = (int(metadata.num_rows), tuple(schema.names), schema)
        return self._records_schema

    def _read_parquet_columns(self, names, *, dictionary: bool):
        """The ``names`` columns of ``records.parquet`` as an Arrow table (string columns dictionary-
        encoded when ``dictionary``); KeyError for a column the table lacks, a StoreError for damage."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        _, columns, schema = self._records_footer()
        for name in names:
            if name not in columns:
                raise KeyError(name)
        strings = [n for n in names if pa.types.is_string(schema.field(n).type)
                   or pa.types.is_large_string(schema.field(n).type)] if dictionary else []
        fs, path = storage.filesystem(storage.join(self.path, RECORDS_TABLE))
        try:
            return pq.read_table(path, filesystem=fs, columns=list(names), read_dictionary=strings or None)
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise self._table_error(RECORDS_TABLE, exc) from None

    def _read_columns(self, names) -> None:
        """Read ``names`` of ``records.parquet`` into the column cache (numbers as numpy, strings as categories)."""
        import pyarrow as pa

        table = self._read_parquet_columns(names, dictionary=True)
        for name in names:
            series = table.column(name).to_pandas()
            if isinstance(series.dtype, pd.CategoricalDtype):
                self._columns[name] = series.array
            else:
                # A numpy copy that owns its memory, so Arrow's decoded pages can go back to the system.
                values = np.array(series.to_numpy(), copy=True)
                values.flags.writeable = False  # shared by every caller: nobody edits it by accident
                self._columns[name] = values
            del series
        del table
        pa.default_memory_pool().release_unused()

    def _table_error(self, name: str, exc: BaseException) -> StoreError:
        # pyarrow's messages run over several lines; the first says what is wrong.
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return StoreError(f"{storage.join(self.path, name)}: unreadable table ({reason}); the store is damaged: "
                          f"run ecg-ray inspect --verify {self.path}, then prepare it again")

    def _read_table(self, name: str) -> pd.DataFrame:
        import pyarrow as pa

        try:
            return storage.read_parquet(storage.join(self.path, name))
        except (storage.StorageError, pa.ArrowException, ValueError, OSError) as exc:
            raise self._table_error(name, exc) from None

    def _table_rows(self, name: str) -> int | None:
        """Rows of a table from its Parquet footer (a truncated file has none); None for a table
        without columns (a store without labels), whose row count Parquet does not keep."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        fs, path = storage.filesystem(storage.join(self.path, name))
        try:
            metadata = pq.read_metadata(path, filesystem=fs)
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise self._table_error(name, exc) from None
        return int(metadata.num_rows) if metadata.num_columns else None

    @property
    def fs(self) -> float:
        return float(self.manifest["fs"])

    @property
    def leads(self) -> list[str]:
        return list(self.manifest["leads"])

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest["label_names"])

    def __len__(self) -> int:
        if self._records is not None:
            return len(self._records)
        return self._records_footer()[0]

    @property
    def version(self) -> str:
        """Changes whenever the store is prepared again at the same location."""
        return store_version(self.manifest)

    def signals(self) -> zarr.Array:
        """The ``signals`` array; every chunk read through it is checked against the manifest's sha256
        the first time it is touched (``ecg_ray.data.integrity``)."""
        if self._signals is None:
            self._signals = open_signals(self.path, chunk_verifier(self.path, manifest=self.manifest))
        return self._signals

    def label_matrix(self, label_set: str = "all") -> np.ndarray:
        """(records, labels) uint8 matrix for a named label view (default: all label names)."""
        sets = self.manifest.get("label_sets", {})
        if label_set not in sets:
            raise StoreError(f"label set {label_set!r} not in store; available: {sorted(sets)}")
        if self._labels is None:
            self._labels = self._read_table(LABELS_TABLE)
        return self._labels[sets[label_set]].to_numpy(dtype=np.uint8)

    def signal(self, index: int) -> np.ndarray:
        """One record as (time, 12) float32 mV (its chunks verified; NaN/inf raise naming the record)."""
        start = int(self.column("offset")[index])
        record = self.signals()[start:start + int(self.column("length")[index])]
        if not np.isfinite(record).all():
            bad = int(np.count_nonzero(~np.isfinite(record)))
            record_id = self.take("id", np.array([index]))[0]
            raise StoreError(f"{self.path}: record {record_id} (index {index}) holds {bad} non-finite sample(s) "
                             f"(NaN or inf); such a store cannot be used: prepare it again (prepare rejects "
                             f"NaN/inf input and names the record)")
        return record

    def verify(self) -> list[str]:
        """Re-check every checksum, then the tables and the index; returns a list of problems (empty = intact).

        Checksums come first and need only the manifest, so a store whose tables are damaged is
        still verified (and the damage reported as a checksum mismatch, like any other).
        """
        problems = []
        expected = self.manifest.get("checksums", {})
        actual = checksum_files(self.path)
        for name, digest in expected.items():
            if name not in actual:
                problems.append(f"{name}: missing")
            elif actual[name] != digest:
                problems.append(f"{name}: checksum mismatch")
        for name in sorted(set(actual) - set(expected)):
            problems.append(f"{name}: unexpected file (not in manifest)")
        if not problems:
            try:
                lengths = self.column("length")
                offsets = self.column("offset")
                # Every column must decode, not only the two the stream reads (read, then dropped).
                self._read_parquet_columns(self.record_columns, dictionary=False)
                label_rows = self._table_rows(LABELS_TABLE)
            except StoreError as exc:  # checksums match but prepare wrote a broken table
                return [str(exc)]
            if len(lengths) != self.manifest["records"]:
                problems.append("records.parquet row count differs from manifest")
            elif label_rows is not None and label_rows != len(lengths):
                problems.append("labels.parquet row count differs from records.parquet")
            elif np.any(offsets != np.concatenate([[0], np.cumsum(lengths)[:-1]])):
                problems.append("records.parquet offsets are not contiguous")
            elif self.signals().shape[0] != int(lengths.sum()):
                problems.append("signals length differs from the sum of record lengths")
        return problems

    def summary(self) -> dict:
        """The machine-readable summary printed by ``ecg-ray inspect --json``."""
        m = self.manifest
        return {
            "path": self.path,
            "records": int(m["records"]),
            "leads": list(m["leads"]),
            "fs": m["fs"],
            "label_names": list(m["label_names"]),
            "label_sets": {k: len(v) for k, v in m.get("label_sets", {}).items()},
            "per_fold": m.get("per_fold", {}),
            "per_dataset": m.get("per_dataset", {}),
            "skipped": m.get("skipped", []),
            "excluded": m.get("excluded", {}),
            "label_warnings": m.get("label_warnings", {}),
            "bytes": directory_bytes(self.path),
            "samples": int(m["samples"]),
            "hours": round(int(m["samples"]) / float(m["fs"]) / 3600, 3),
            "codec": m.get("codec"),
            "schema_version": m["schema_version"],
            "sources": m.get("sources", []),
        }


def open_signals(store_path: str | Path, verifier: ChunkVerifier | None = None) -> zarr.Array:
    """The ``signals`` array of a store, local or in cloud storage, opened read-only.

    With a ``verifier`` every chunk read is checked against the manifest's sha256 on first touch.
    """
    if verifier is None:
        return zarr.open_array(storage.zarr_store(store_path), path=SIGNALS, mode="r")
    return zarr.open_array(verifying_zarr_store(storage.normalize(store_path), verifier), path=SIGNALS, mode="r")
