"""Writing a store (layout in ``ecg_ray.data.store``): records streamed in, made visible atomically.

:class:`StoreWriter` appends standardized records chunk by chunk into a staging directory (a
hidden sibling of the target, or ``$TMPDIR`` for a cloud target), writes the tables and the
manifest (with a checksum of every file) last, and only then moves or uploads the store into
place. What it may replace is decided by ``ecg_ray.overwrite``; staging directories of killed
runs are cleaned by ``ecg_ray.data.staging``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import zarr
from zarr import codecs

from ecg_ray import storage
from ecg_ray.data.record_rows import RecordRows
from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.data.sources.base import Record, SkippedRecord, label_sort_key
from ecg_ray.data.staging import (
    CLOUD_STORE_DIR,
    OWNER_FILE,
    cloud_staging,
    local_staging,
    release,
    remote_staging,
    remove_stale_staging,
)
from ecg_ray.data.store import (
    CODECS,
    DEFAULT_CHUNK_SAMPLES,
    DEFAULT_CODEC,
    LABELS_TABLE,
    MANIFEST,
    RECORDS_TABLE,
    SCHEMA_VERSION,
    SIGNALS,
    checksum_files,
    directory_bytes,
)
from ecg_ray.errors import StoreError
from ecg_ray.overwrite import check_store_target
from ecg_ray.version import __version__


def make_compressors(codec: str):
    """zarr v3 compressor list for a codec name."""
    if codec == "none":
        return None
    if codec == "lz4":
        return [codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=4)]
    if codec == "zstd":
        return [codecs.ZstdCodec(level=3)]
    raise StoreError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")


@dataclass
class StoreWriter:
    """Streams standardized records into a new store; ``finalize`` makes it visible atomically."""

    out: str | Path
    fs: float
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES
    codec: str = DEFAULT_CODEC
    overwrite: bool = False
    #: show a progress bar while uploading a store prepared to a cloud URI
    progress: bool = False
    #: paths the store is prepared from: ``overwrite`` never replaces a location holding or inside one
    inputs: tuple[str, ...] = ()
    #: accepted records' rows and label names, compact until finalize (~1.1 kB per record as dicts)
    _rows: RecordRows = field(default_factory=RecordRows, init=False)
    skipped: list[SkippedRecord] = field(default_factory=list, init=False)
    excluded: Counter = field(default_factory=Counter, init=False)
    #: records per label text a reader kept verbatim (``Record.unmapped_labels``)
    unmapped_labels: Counter = field(default_factory=Counter, init=False)
    unmapped_records: int = field(default=0, init=False)
    #: ``prepare --ray`` to a cloud target: the staging prefix beside it that holds the chunk files
    chunk_prefix: str | None = field(default=None, init=False)
    #: chunk files written by Ray tasks: relative path -> (sha256, bytes), see :meth:`record_chunks`
    _chunk_files: dict[str, tuple[str, int]] = field(default_factory=dict, init=False)
    _remote_files: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self):
        self.remote = storage.is_uri(self.out)
        self.inputs = tuple(str(item) for item in self.inputs)
        # Refuse (before writing anything) a target that is not a store we may replace.
        target = check_store_target(self.out, inputs=self.inputs, overwrite=self.overwrite)
        remove_stale_staging(target)  # what runs killed while preparing this same target left behind
        if self.remote:
            self.out = target
            # Staged on local disk ($TMPDIR), uploaded by finalize: needs local space for the whole store.
            self._staging = cloud_staging(self.out)
            self.tmp = self._staging / CLOUD_STORE_DIR
        else:
            self.out = Path(target)
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._staging = self.tmp = local_staging(self.out)
        # mode "a", not "w": "w" would delete the staging directory's owner file.
        self._root = zarr.open_group(str(self.tmp), mode="a", zarr_format=3)
        self._signals = self._root.create_array(
            SIGNALS, shape=(0, len(CANONICAL_LEADS)), chunks=(self.chunk_samples, len(CANONICAL_LEADS)),
            dtype="float32", compressors=make_compressors(self.codec), fill_value=0.0,
            dimension_names=("time", "lead"),
        )
        self._buffer = np.empty((self.chunk_samples, len(CANONICAL_LEADS)), dtype=np.float32)
        self._buffered = 0
        self._written = 0

    @property
    def n_records(self) -> int:
        return len(self._rows)

    def add(self, record: Record, extra_labels: dict[str, int] | None = None) -> None:
        """Append one record (signal already standardized to the store's rate and leads)."""
        if record.fs != self.fs:
            raise StoreError(f"record {record.id} is at {record.fs} Hz, store is at {self.fs} Hz")
        signal = record.signal
        offset = self._written + self._buffered
        self._append(signal)
        self._add_row(record, offset, int(signal.shape[0]), extra_labels)

    def add_written(self, record: Record, length: int, extra_labels: dict[str, int] | None = None) -> int:
        """Register a record whose ``length`` samples someone else writes into ``signals``; returns its offset.

        The parallel prepare (``ecg_ray.data.parallel_prepare``) writes the signals in Ray tasks:
        the records' rows, labels and counts still come from here, so both paths build the same
        tables and manifest. ``record.signal`` is not used. Do not mix with :meth:`add`.
        """
        if record.fs != self.fs:
            raise StoreError(f"record {record.id} is at {record.fs} Hz, store is at {self.fs} Hz")
        offset = self._written
        self._written += int(length)
        self._add_row(record, offset, int(length), extra_labels)
        return offset

    def _add_row(self, record: Record, offset: int, length: int, extra_labels: dict[str, int] | None) -> None:
        row = {"id": record.id, "dataset": record.dataset, "file": record.file, "offset": offset,
               "length": length, "fs_original": float(record.fs_original)}
        row.update(record.metadata)
        labels = dict.fromkeys(record.labels, 1)
        labels.update(extra_labels or {})
        self._rows.append(row, labels)
        if record.unmapped_labels:
            self.unmapped_labels.update(dict.fromkeys(record.unmapped_labels, 1))
            self.unmapped_records += 1

    def _append(self, signal: np.ndarray) -> None:
        # Fill a chunk-sized buffer and write whole chunks, so every write is chunk-aligned.
        pos = 0
        while pos < len(signal):
            take = min(len(signal) - pos, self.chunk_samples - self._buffered)
            self._buffer[self._buffered:self._buffered + take] = signal[pos:pos + take]
            self._buffered += take
            pos += take
            if self._buffered == self.chunk_samples:
                self._flush()

    def _flush(self) -> None:
        if self._buffered:
            self._signals.append(self._buffer[:self._buffered], axis=0)
            self._written += self._buffered
            self._buffered = 0

    def skip(self, skipped: SkippedRecord) -> None:
        self.skipped.append(skipped)

    def exclude(self, reason: str) -> None:
        self.excluded[reason] += 1

    def label_warnings(self) -> dict[str, Any]:
        """The manifest's ``label_warnings``: label texts kept verbatim as label names.

        ``unmapped`` maps each text to the number of stored records carrying it, ``records``
        counts the records with at least one such text and ``total`` sums ``unmapped``.
        """
        return {"unmapped": {k: int(v) for k, v in sorted(self.unmapped_labels.items())},
                "records": int(self.unmapped_records), "total": int(sum(self.unmapped_labels.values()))}

    def size_signals(self, samples: int) -> None:
        """Give ``signals`` its final length before tasks write its chunks (the parallel prepare)."""
        self._signals.resize((int(samples), len(CANONICAL_LEADS)))

    @property
    def signals_location(self) -> str:
        """Where the staged ``signals`` array lives (a local path): Ray tasks open it there."""
        return str(self.tmp / SIGNALS)

    def stage_chunks_remotely(self) -> str:
        """Chunk files of a cloud store written by Ray tasks go to a staging prefix beside the target.

        For ``prepare --ray`` to a cloud target: the tasks put each chunk file at
        ``PREFIX/signals/c/K/0`` (and may stage other files under the prefix); ``finalize`` copies
        the chunk files into place server-side, after the tables and before the manifest, and the
        prefix is removed at the end or on ``abort``. The local staging directory then holds only
        the small files (metadata, tables, manifest). Returns the prefix.
        """
        if not self.remote:
            raise StoreError(f"{self.out}: a local store's chunks are written into its staging directory")
        self.chunk_prefix = remote_staging(str(self.out))
        return self.chunk_prefix

    def record_chunks(self, files: dict[str, tuple[str, int]]) -> None:
        """Chunk files someone else wrote (relative path -> (sha256, bytes)): their checksums are taken
        as given, and with :meth:`stage_chunks_remotely` they are the files copied into place."""
        self._chunk_files.update(files)

    def finalize(self, *, sources: list[dict], label_names: list[str] | None,
                 label_sets: dict[str, list[str]] | None = None, extra: dict | None = None,
                 known_checksums: dict[str, str] | None = None) -> dict:
        """Write tables and manifest, then move the store into place. Returns the manifest.

        ``known_checksums`` (relative path -> sha256) are taken as given instead of re-reading
        those files: the parallel prepare's write tasks hash the chunks they wrote.
        So are those of :meth:`record_chunks`, which, when staged remotely, are copied into place.
        """
        self._flush()
        if not self._rows:
            self.abort()
            reasons = Counter(s.reason.split(":")[0] for s in self.skipped)
            raise StoreError(f"no usable records: {len(self.skipped)} skipped "
                             f"({dict(reasons) or 'none read'}), {sum(self.excluded.values())} excluded")
        seen = sorted(self._rows.label_names(), key=label_sort_key)
        names = list(label_names) if label_names is not None else [n for n in seen if ":" not in n]
        derived = [n for n in seen if n not in names]
        columns = names + derived
        label_matrix = self._rows.label_matrix(columns)
        index = {n: j for j, n in enumerate(columns)}
        sets = {"all": names}
        sets.update(label_sets or {})
        # A view member no record carries still gets a column (all zeros), so every view resolves.
        missing = list(dict.fromkeys(n for members in sets.values() for n in members if n not in index))
        if missing:
            columns += missing
            label_matrix = np.concatenate([label_matrix, np.zeros((len(label_matrix), len(missing)), np.uint8)], 1)

        records = self._rows.frame()
        records.insert(0, "record_index", np.arange(len(records), dtype=np.int64))
        for column in ("patient_id", "id", "dataset", "file"):
            if column in records:
                records[column] = records[column].astype(str)
        records.to_parquet(self.tmp / RECORDS_TABLE, index=False)
        pd.DataFrame(label_matrix, columns=columns).to_parquet(self.tmp / LABELS_TABLE, index=False)

        total = int(records["length"].sum())
        manifest = {
            "format": "ecg_ray.store",
            "schema_version": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "ecg_ray_version": __version__,
            "fs": self.fs,
            "leads": list(CANONICAL_LEADS),
            "units": "mV",
            "dtype": "float32",
            "records": len(records),
            "samples": total,
            "chunk_samples": self.chunk_samples,
            "codec": self.codec,
            "label_names": names,
            "label_sets": sets,
            "sources": sources,
            "per_dataset": {str(k): int(v) for k, v in records["dataset"].value_counts().sort_index().items()},
            "per_fold": ({str(int(k)): int(v) for k, v in records["fold"].value_counts().sort_index().items()}
                         if "fold" in records else {}),
            "skipped": [s.to_dict() for s in self.skipped],
            "excluded": dict(self.excluded),
            "label_warnings": self.label_warnings(),
            **(extra or {}),
        }
        known = {**(known_checksums or {}), **{rel: digest for rel, (digest, _) in self._chunk_files.items()}}
        remote_files = {rel: size for rel, (_, size) in self._chunk_files.items()} if self.chunk_prefix else {}
        checksums = _checksums(self.tmp, known)
        checksums.pop(OWNER_FILE, None)  # a local staging directory's owner file is dropped before the move
        checksums.update({rel: known[rel] for rel in remote_files})
        manifest["checksums"] = dict(sorted(checksums.items()))
        owner = self.tmp / OWNER_FILE
        manifest["bytes"] = (directory_bytes(self.tmp) - (owner.stat().st_size if owner.exists() else 0)
                             + sum(remote_files.values()))
        self._remote_files = tuple(sorted(remote_files))
        with open(self.tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        self._move_into_place()
        return manifest

    def _check_target_again(self) -> bool:
        """Re-run the target check right before replacing (the target may have changed meanwhile).

        Returns whether something is there to replace; on refusal the partial store is removed.
        """
        if storage.exists(self.out) and not self.overwrite:
            self.abort()
            raise StoreError(f"{self.out} appeared while preparing; not replacing it")
        try:
            check_store_target(self.out, inputs=self.inputs, overwrite=self.overwrite)
        except StoreError:
            self.abort()
            raise
        return storage.exists(self.out)

    def _move_into_place(self) -> None:
        if self.remote:
            self._upload()
            return
        old = None
        if self._check_target_again():
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.out, old)
        release(self.tmp)
        os.rename(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _upload(self) -> None:
        if self._check_target_again():
            # The old manifest goes first, so no reader ever sees a mix of old and new files.
            storage.delete_file(storage.join(self.out, MANIFEST))
            storage.delete_dir(self.out)
        try:
            if self._remote_files:
                # Server-side copies: the chunks never pass through this machine.
                storage.copy_files([(storage.join(self.chunk_prefix, rel), storage.join(self.out, rel))
                                    for rel in self._remote_files], progress=self.progress,
                                   desc=f"copy {storage.name(self.out)} chunks into place")
            storage.upload_dir(self.tmp, self.out, last=(MANIFEST,), progress=self.progress)
        finally:
            self.abort()

    def abort(self) -> None:
        """Remove the partial store (an interrupted prepare leaves nothing that looks complete)."""
        shutil.rmtree(self._staging, ignore_errors=True)
        if self.chunk_prefix is not None:
            try:
                storage.delete_dir(self.chunk_prefix)
            except storage.StorageError:
                pass  # left for the next prepare of this target (its owner file marks it)




def _checksums(root: Path, known: dict[str, str]) -> dict[str, str]:
    """``checksum_files(root)``, reading only the files whose sha256 is not in ``known``."""
    if not known:
        return checksum_files(root)
    out = {}
    for rel, _ in storage.list_files(root):
        if PurePosixPath(rel).name == MANIFEST:
            continue
        if rel not in known:
            digest = hashlib.sha256()
            with open(root / rel, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 22), b""):
                    digest.update(block)
            known_digest = digest.hexdigest()
        else:
            known_digest = known[rel]
        out[rel] = known_digest
    return out
