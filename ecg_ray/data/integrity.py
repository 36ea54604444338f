"""Integrity of a store's signals on the read path: chunk checksums and finite samples.

A flipped byte in a chunk file (a failing disk, a bad copy or sync) or a NaN that an older version
wrote would otherwise train silently: the stream cuts whatever bytes it finds, and a NaN shows up
epochs later as a NaN loss. So every read of ``signals`` checks what it reads:

* **Chunk checksums.** The manifest holds the sha256 of every chunk file (``signals/c/<k>/0``),
  so every store ever prepared is protected, with no format change and no new dependency. A chunk
  is verified the first time it is touched, before any crop is cut from it: on the raw path the
  whole file is read and hashed before it is memory-mapped or ``preadv``-ed; on the zarr path
  (compressed or cloud stores) :class:`VerifyingStore` hashes the bytes zarr fetched anyway (no
  second read). A zarr v3 ``crc32c`` codec was the alternative: it protects only stores prepared
  after it, changes the raw layout the fast path reads, and its speed advantage (crc32c vs
  sha256 at ~2 GB/s with SHA-NI) matters little when each chunk is hashed once (bench/RESULTS.md).
* **Once per node and run, not once per process.** Read tasks run in many worker processes; each
  hashing every chunk it touches would hash the store once per process (on a 1M-record store,
  48 GB per process). A verified chunk is therefore marked in a per-process set *and* in a small
  node-wide bitmap file (one byte per chunk, in the temp directory, keyed by store, store version
  and the Ray node and job), so the other processes of the same run skip it. Outside Ray (the CLI,
  tests) only the per-process set is used. A chunk damaged after it was verified is caught by the
  next run.
* **Finite samples.** Prepare rejects NaN/inf input, but a store written by an older version, or
  by code that bypassed prepare, may hold them. Raw chunks are checked once with their checksum
  (the chunk cannot change afterwards without failing it); data decoded through zarr is checked
  as it is read (spans; training crops rather than the spans they are cut from, which may hold
  far more), a small cost next to decompression; :meth:`EcgStore.signal` checks its record.

Every failure is one :class:`~ecg_ray.errors.StoreError` line naming the store, the chunk and the
records (ids) that live in it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ecg_ray import storage
from ecg_ray.errors import StoreError

logger = logging.getLogger(__name__)

LEADS = 12
SIGNALS = "signals"  # = ecg_ray.data.store.SIGNALS (store imports this module, not the other way round)
CHUNK_PREFIX = f"{SIGNALS}/c/"
#: node-wide bitmaps of verified chunks older than this are removed (runs finished long ago)
_BITMAP_MAX_AGE_S = 7 * 24 * 3600
_HOW_TO_FIX = "run ecg-ray inspect --verify, then prepare the store again (or restore it from a copy)"


def chunk_key(k: int) -> str:
    """The manifest's name of time chunk ``k`` (the default zarr v3 chunk key of a (time, 12) array)."""
    return f"{CHUNK_PREFIX}{k}/0"


def _chunk_index(name: str) -> int | None:
    if not name.startswith(CHUNK_PREFIX):
        return None
    parts = name[len(CHUNK_PREFIX):].split("/")
    return int(parts[0]) if len(parts) == 2 and parts[0].isdigit() and parts[1] == "0" else None


def store_version(manifest: dict) -> str:
    """Changes whenever a store is prepared again at the same location.

    Creation time (to the second), array metadata and the record table's checksum: a store prepared
    again within the same second from other records still gets a new version, so no cache (memory
    maps, verified chunks) outlives the files it describes.
    """
    checksums = manifest.get("checksums", {})
    return (f"{manifest.get('created', '')}:{checksums.get(SIGNALS + '/zarr.json', '')}:"
            f"{checksums.get('records.parquet', '')[:16]}")


# ----------------------------------------------------------------------------- naming records

def _records_table(store_path: str):
    """(ids, offsets, lengths) of a store, read for an error message only (the failure path)."""
    table = storage.read_parquet(storage.join(store_path, "records.parquet"))
    return (table["id"].astype(str).to_numpy(), table["offset"].to_numpy(np.int64),
            table["length"].to_numpy(np.int64))


def records_overlapping(store_path: str, samples: np.ndarray) -> list[str]:
    """Ids of the records holding any of the global sample positions ``samples`` (sorted, unique)."""
    ids, offsets, lengths = _records_table(store_path)
    samples = np.unique(samples)
    at = np.searchsorted(offsets, samples, side="right") - 1  # the last record starting at or before
    samples, at = samples[at >= 0], at[at >= 0]
    at = at[samples < offsets[at] + lengths[at]]  # past a record's end: padding after the last one
    return ids[np.unique(at)].tolist()


def _records_in_span(store_path: str, start: int, stop: int) -> list[str]:
    ids, offsets, lengths = _records_table(store_path)
    inside = (offsets < stop) & (offsets + lengths > start)
    return ids[inside].tolist()


def describe_records(ids: list[str]) -> str:
    """``record r1`` / ``3 records r1, r2, r3`` / ``131 records r1 .. r131`` (ids in store order)."""
    if not ids:
        return "no records (padding past the last record)"
    if len(ids) == 1:
        return f"record {ids[0]}"
    return f"{len(ids)} records " + (", ".join(ids) if len(ids) <= 8 else f"{ids[0]} .. {ids[-1]}")


def _name_records(store_path: str, find) -> str:
    try:
        return describe_records(find())
    except Exception as exc:  # noqa: BLE001 - the records table itself may be what is damaged
        return f"records unknown ({storage.name(store_path)}/records.parquet unreadable: {type(exc).__name__})"


def non_finite_error(store_path: str, samples: np.ndarray, where: str = "") -> StoreError:
    """The error for NaN/inf values at global sample (time) positions ``samples``."""
    named = _name_records(store_path, lambda: records_overlapping(store_path, samples))
    return StoreError(f"{store_path}: NaN or inf samples in {named}{where}; "
                      f"such a store cannot be trained on: prepare it again (prepare rejects NaN/inf input "
                      f"and names the record)")


def check_finite(store_path: str, signal: np.ndarray, first_sample: int) -> None:
    """Raise naming the records if ``signal`` (time, 12), from global sample ``first_sample``, holds NaN/inf.

    The common case is one vectorized pass; only a failure locates the samples and reads the records table.
    """
    if np.isfinite(signal).all():
        return
    rows = np.flatnonzero(~np.isfinite(signal).all(axis=1))
    raise non_finite_error(store_path, first_sample + rows)


# ----------------------------------------------------------------------------- chunk verification

def _run_key() -> str | None:
    """Ray node + job of this process, or None outside Ray (then verification is per process only)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        context = ray.get_runtime_context()
        return f"{context.get_node_id()}:{context.get_job_id()}"
    except Exception:  # noqa: BLE001 - no runtime context: fall back to per-process verification
        return None


def _bitmap_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"ecg_ray-verified-{os.getuid()}"


def _open_bitmap(store_path: str, version: str) -> int | None:
    """An fd on the node-wide verified-chunk bitmap of this store, version and run (None: not shared)."""
    run = _run_key()
    if run is None:
        return None
    folder = _bitmap_dir()
    name = hashlib.sha256(f"{store_path}\0{version}\0{run}".encode()).hexdigest()[:32] + ".bits"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / name
        if not path.exists():
            _remove_old_bitmaps(folder)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # an unwritable temp dir costs speed (per-process verification), not safety
        logger.debug("verified-chunk bitmap unavailable (%s); verifying per process", exc)
        return None


def _remove_old_bitmaps(folder: Path) -> None:
    cutoff = time.time() - _BITMAP_MAX_AGE_S
    for old in folder.glob("*.bits"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass  # another process removed it first


class ChunkVerifier:
    """Checks each chunk of one store version against the manifest's sha256 the first time it is touched.

    Holds the expected digests compactly (32 bytes per chunk: ~240 KB for a 1M-record store of
    7,600 chunks) and which chunks are verified (per process, and node-wide under Ray).
    """

    def __init__(self, store_path: str, manifest: dict):
        self.store_path = store_path
        self.version = store_version(manifest)
        self.chunk_samples = int(manifest.get("chunk_samples") or 0)
        checksums = manifest.get("checksums") or {}
        chunks = {k: digest for name, digest in checksums.items() if (k := _chunk_index(name)) is not None}
        # A store without checksums cannot be verified (none was ever written without them; be explicit).
        self.enabled = bool(checksums)
        n = max(chunks, default=-1) + 1
        self.expected = np.zeros((n, 32), dtype=np.uint8)
        self.listed = np.zeros(n, dtype=bool)
        for k, digest in chunks.items():
            self.expected[k] = np.frombuffer(bytes.fromhex(digest), dtype=np.uint8)
            self.listed[k] = True
        self._verified: set[int] = set()
        self._n_listed = int(self.listed.sum())
        self._complete = not self.enabled
        self._bitmap = _open_bitmap(store_path, self.version) if self.enabled else None

    def close(self) -> None:
        if self._bitmap is not None:
            os.close(self._bitmap)
            self._bitmap = None

    @property
    def complete(self) -> bool:
        """Every chunk of the manifest is verified (in this process's view): readers can skip the checks."""
        if not self._complete and len(self._verified) >= self._n_listed:
            self._complete = all(k in self._verified for k in np.flatnonzero(self.listed).tolist())
        return self._complete

    def is_verified(self, k: int) -> bool:
        if not self.enabled or k in self._verified:
            return True
        if self._bitmap is not None and os.pread(self._bitmap, 1, k) == b"\x01":
            self._verified.add(k)
            return True
        return False

    def _mark(self, k: int) -> None:
        self._verified.add(k)
        if self._bitmap is not None:
            os.pwrite(self._bitmap, b"\x01", k)

    def _corrupt(self, k: int, what: str) -> StoreError:
        def records():
            start = k * self.chunk_samples
            return _records_in_span(self.store_path, start, start + self.chunk_samples)

        return StoreError(f"{self.store_path}: chunk {chunk_key(k)} {what}; it holds "
                          f"{_name_records(self.store_path, records)}; {_HOW_TO_FIX}")

    def check_bytes(self, k: int, data: bytes | None, *, raw_float32: bool = False) -> None:
        """Verify chunk ``k``'s file content (None: no such file) unless already verified; mark it verified.

        ``raw_float32``: the bytes are the chunk's samples (codec none), so they are also checked
        to be finite here, once, instead of on every crop cut from them.
        """
        if self.is_verified(k):
            return
        listed = k < len(self.listed) and self.listed[k]
        if data is None:
            if listed:
                raise self._corrupt(k, "is missing (the manifest lists it)")
            self._mark(k)  # zarr never writes a chunk equal to the fill value (zeros): nothing to check
            return
        if not listed:
            raise self._corrupt(k, "is not in the manifest (a file the store was not prepared with)")
        if hashlib.sha256(data).digest() != self.expected[k].tobytes():
            raise self._corrupt(k, "is corrupt (its sha256 differs from the manifest's)")
        if raw_float32:
            samples = np.frombuffer(data, dtype="<f4").reshape(-1, LEADS)
            if not np.isfinite(samples).all():
                rows = np.flatnonzero(~np.isfinite(samples).all(axis=1))
                raise non_finite_error(self.store_path, k * self.chunk_samples + rows, f" (chunk {chunk_key(k)})")
        self._mark(k)

    def check_file(self, k: int, path: str) -> None:
        """Verify a raw (codec none) chunk file before it is mapped or read."""
        if not self.is_verified(k):
            self._check_claimed(k, path, wait=True)

    def check_files(self, chunks, path_of) -> None:
        """Verify raw chunk files ``chunks`` (a read task's), sharing the work with the node's other processes.

        Processes of a run start together and touch the same chunks in the same order; each would
        hash them all before any could mark one done. So a process claims a chunk (a byte-range
        lock on its byte of the bitmap) before hashing it, starts at its own rotation of the list,
        and waits only at the end for chunks that others are still hashing.
        """
        todo = [k for k in chunks if not self.is_verified(k)]
        if not todo:
            return
        shift = os.getpid() % len(todo)
        busy = [k for k in todo[shift:] + todo[:shift] if not self._check_claimed(k, path_of(k), wait=False)]
        for k in busy:
            self._check_claimed(k, path_of(k), wait=True)

    def _check_claimed(self, k: int, path: str, wait: bool) -> bool:
        """Verify chunk ``k`` holding its claim; False if another process holds it and ``wait`` is False."""
        if self._bitmap is not None:
            try:
                fcntl.lockf(self._bitmap, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), 1, k, os.SEEK_SET)
            except OSError:  # held by another process (EAGAIN/EACCES): it is hashing this chunk now
                return False
        try:
            if self.is_verified(k):  # the process that held the claim has finished it
                return True
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                data = None
            self.check_bytes(k, data, raw_float32=True)
            return True
        finally:
            if self._bitmap is not None:
                fcntl.lockf(self._bitmap, fcntl.LOCK_UN, 1, k, os.SEEK_SET)


#: per-process verifiers by (store path, version); a handful of stores per process at most
_VERIFIERS: dict[tuple[str, str], ChunkVerifier] = {}
_MAX_VERIFIERS = 16


def chunk_verifier(store_path: str, version: str = "", manifest: dict | None = None) -> ChunkVerifier:
    """The per-process verifier of a store version (``version`` from :func:`store_version`).

    With ``manifest`` (already read by the caller) it is not read again; without, it is read once
    per process, and must still be ``version`` (else the store was prepared again mid-run).
    ``version`` "" takes whatever the store holds now (tests, benchmarks).
    """
    if manifest is not None:
        version = store_version(manifest)
    verifier = _VERIFIERS.get((store_path, version))
    if verifier is not None:
        return verifier
    if manifest is None:
        manifest_file = storage.join(store_path, "manifest.json")
        try:
            manifest = json.loads(storage.read_text(manifest_file))
        except (OSError, ValueError, StoreError) as exc:
            raise StoreError(f"{manifest_file}: cannot read the manifest to verify chunks ({exc})") from None
        if version and store_version(manifest) != version:
            raise StoreError(f"{store_path}: the store was prepared again while this run read it "
                             f"(its manifest changed); start the run again")
    verifier = ChunkVerifier(store_path, manifest)
    if not verifier.enabled:
        logger.warning("%s: the manifest has no checksums; chunks cannot be verified", store_path)
    if len(_VERIFIERS) >= _MAX_VERIFIERS:
        _VERIFIERS.pop(next(iter(_VERIFIERS))).close()
    _VERIFIERS[(store_path, version)] = verifier
    return verifier


# ----------------------------------------------------------------------------- zarr reads

def verifying_zarr_store(location: str, verifier: ChunkVerifier):
    """A read-only zarr store over ``location`` whose chunk reads are verified (see module docstring)."""
    from zarr.storage import LocalStore, WrapperStore

    inner = storage.zarr_store(location)
    if isinstance(inner, str | os.PathLike):
        inner = LocalStore(inner, read_only=True)

    class VerifyingStore(WrapperStore):
        """Hashes each chunk's bytes as zarr fetches them, the first time (no second read)."""

        def _with_store(self, store):
            return type(self)(store)

        async def get(self, key, prototype, byte_range=None):
            value = await self._store.get(key, prototype, byte_range)
            k = _chunk_index(key)
            if k is not None and byte_range is None:
                verifier.check_bytes(k, None if value is None else value.to_bytes())
            return value

        async def get_partial_values(self, prototype, key_ranges):
            key_ranges = list(key_ranges)
            return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

        async def _get_many(self, requests):
            for key, prototype, byte_range in requests:
                yield key, await self.get(key, prototype, byte_range)

    return VerifyingStore(inner)
