"""Cutting crops out of a store's ``signals`` array: numpy only, no Ray.

(Where evaluation windows start, and cutting them from whole records, is :mod:`ecg_ray.data.windows`.)

Two readers feed the cutters:

* **raw chunks** (local store, codec ``none``): every zarr chunk file is a plain little-endian
  float32 (samples, 12) array, so a crop is one contiguous ``width * 48``-byte run of its chunk
  file. A store of at most ``MAPPED_CHUNKS`` chunks (~1024, i.e. up to ~130k records of 10 s at
  100 Hz) keeps every chunk file memory-mapped once per process and cuts each task's crops with
  one gather per chunk (~3.6 us per crop on 2 cores, bench/stream_breakdown.py). A larger store
  would re-map chunk files in almost every task under a global shuffle (a task of 8192 random
  records touches ~5,000 of a 1M-record store's 7,600 chunks), so there each crop is one
  ``preadv`` through a per-process cache of open files (~6 us per crop, whatever the store size).
* **zarr** (compressed or cloud stores): the records are read through zarr (whole chunks
  decoded) and crops cut from the decoded span with one strided view. Reading records spread
  over the store therefore decodes many chunks: use a block shuffle (``data.shuffle_block``)
  there.

Both readers check what they read (``ecg_ray.data.integrity``): each chunk file against the
manifest's sha256 the first time this node touches it in a run (raw chunks also for NaN/inf),
and data decoded through zarr for NaN/inf. A failure stops the read with a one-line StoreError
naming the store, the chunk and its records. ``verify=False`` skips both (benchmarks only).
"""

from __future__ import annotations

import functools
import json
import os
import resource
from collections import OrderedDict
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from ecg_ray import storage
from ecg_ray.data.integrity import check_finite, chunk_verifier, non_finite_error
from ecg_ray.data.store import SIGNALS, open_signals

LEADS = 12
_ROW_BYTES = LEADS * 4
#: stores with at most this many chunks keep all chunk files memory-mapped (one fd per map)
MAPPED_CHUNKS = 1024
# Both caches hold file descriptors: stay well inside this process's limit (1024 on some hosts).
_FD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
_FD_LIMIT = 1 << 16 if _FD_LIMIT == resource.RLIM_INFINITY else _FD_LIMIT
# Read a span in one call when at least this share of it is wanted; otherwise read each run of
# wanted records separately (a 5 % label fraction should not read 100 % of the data).
_DENSE_READ_SHARE = 0.25


def random_crop_starts(lengths: np.ndarray, crop: int, rng: np.random.Generator, per_record: int = 1) -> np.ndarray:
    """Uniform crop starts in [0, length - crop] for each record (repeated ``per_record`` times)."""
    span = np.repeat(lengths - crop + 1, per_record)
    return np.floor(rng.random(span.shape[0]) * span).astype(np.int64)


def cut(signal: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Crops of ``signal`` (time, leads) at ``starts`` as a (n, leads, width) float32 array."""
    windows = sliding_window_view(signal, width, axis=0)  # (time - width + 1, leads, width), a view
    return np.ascontiguousarray(windows[starts])


# ----------------------------------------------------------------------------- raw chunk files

def raw_chunk_layout(store_path: str) -> int | None:
    """Chunk length if ``signals`` is stored as raw little-endian float32 chunks on a local disk.

    Such chunks are plain arrays on disk (zarr v3 ``bytes`` codec, default chunk keys), so a crop
    can be read from the chunk file directly instead of decoding whole records. Any other layout
    returns None (read through zarr).
    """
    if storage.is_uri(store_path):
        return None  # needs a local file; cloud stores are read through zarr/obstore
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


def raw_chunk_count(store_path: str) -> int:
    """Number of time chunks of a local store's ``signals`` array (from its zarr metadata)."""
    meta = json.loads((Path(store_path) / SIGNALS / "zarr.json").read_text())
    chunk = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
    return -(-int(meta["shape"][0]) // chunk)


class _ChunkMaps:
    """Per-process LRU cache of memory-mapped chunk files (a zero array for a chunk zarr never wrote)."""

    def __init__(self, capacity: int = MAPPED_CHUNKS):
        self.capacity = capacity
        self.maps: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()

    def get(self, store_path: str, version: str, chunk: int, k: int, verifier=None) -> np.ndarray:
        key = (store_path, version, k)
        m = self.maps.get(key)
        if m is not None:
            self.maps.move_to_end(key)
            return m
        path = os.path.join(store_path, SIGNALS, "c", str(k), "0")
        if verifier is not None:  # before mapping: no crop is ever cut from an unverified chunk
            verifier.check_file(k, path)
        # zarr does not write a chunk equal to the fill value (all zeros): recreate it
        m = (np.memmap(path, dtype="<f4", mode="r").reshape(-1, LEADS) if os.path.exists(path)
             else np.zeros((chunk, LEADS), np.float32))
        self.maps[key] = m
        if len(self.maps) > self.capacity:
            self.maps.popitem(last=False)
        return m


_CHUNK_MAPS = _ChunkMaps(capacity=max(16, min(MAPPED_CHUNKS, _FD_LIMIT // 4)))


class _ChunkFiles:
    """Per-process LRU cache of open chunk files (fd, or -1 for a chunk zarr never wrote)."""

    def __init__(self, capacity: int = 256):
        self.capacity = capacity
        self.open: OrderedDict[tuple[str, str, int], int] = OrderedDict()

    def get(self, store_path: str, version: str, k: int, verifier=None) -> int:
        key = (store_path, version, k)
        fd = self.open.get(key)
        if fd is not None:
            self.open.move_to_end(key)
            return fd
        path = os.path.join(store_path, SIGNALS, "c", str(k), "0")
        if verifier is not None:  # before the first read (a file closed by the LRU stays verified)
            verifier.check_file(k, path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            fd = -1  # zarr does not write a chunk equal to the fill value (all zeros)
        self.open[key] = fd
        if len(self.open) > self.capacity:
            _, old = self.open.popitem(last=False)
            if old >= 0:
                os.close(old)
        return fd


_CHUNK_FILES = _ChunkFiles(capacity=max(16, min(256, _FD_LIMIT // 8)))


def cut_raw_chunks(store_path: str, chunk: int, starts: np.ndarray, width: int, version: str = "",
                   out: np.ndarray | None = None, mapped: bool = False, verify: bool = True) -> np.ndarray:
    """Crops at global sample positions ``starts`` (any order) from the raw chunk files.

    Returns (n, 12, width) float32 (into ``out`` if given), row i cut at ``starts[i]``.
    ``mapped`` reads through the per-process memory maps (stores of <= ``MAPPED_CHUNKS``
    chunks), else with one ``preadv`` per crop. A crop that straddles two chunks is read in two parts.
    """
    verifier = chunk_verifier(store_path, version) if verify else None
    if verifier is not None and not verifier.complete:  # every chunk this task touches, before any crop
        first, last = starts // chunk, (starts + width - 1) // chunk
        touched = first[:, None] + np.arange((width - 1) // chunk + 2)
        verifier.check_files(np.unique(touched[touched <= last[:, None]]).tolist(),
                             lambda k: os.path.join(store_path, SIGNALS, "c", str(k), "0"))
    if mapped and width <= chunk:
        return _cut_mapped(store_path, chunk, starts, width, version, out, verifier)
    n = len(starts)
    staging = np.empty((n, width, LEADS), dtype=np.float32)  # file order: time-major
    chunk_of = starts // chunk
    local = starts - chunk_of * chunk
    for i in np.argsort(chunk_of, kind="stable").tolist():  # group reads by file
        k, at, done = int(chunk_of[i]), int(local[i]), 0
        while done < width:
            take = min(width - done, chunk - at)
            fd = _CHUNK_FILES.get(store_path, version, k, verifier)
            piece = staging[i, done:done + take]
            if fd < 0:
                piece[:] = 0.0
            elif os.preadv(fd, [piece], at * _ROW_BYTES) != take * _ROW_BYTES:
                raise OSError(f"{store_path}: chunk {k} is shorter than the store's index says; "
                              f"run ecg-ray inspect --verify")
            done, k, at = done + take, k + 1, 0
    if out is None:
        out = np.empty((n, LEADS, width), dtype=np.float32)
    np.copyto(out, staging.transpose(0, 2, 1))
    return out


def _cut_mapped(store_path: str, chunk: int, starts: np.ndarray, width: int, version: str,
                out: np.ndarray | None, verifier=None) -> np.ndarray:
    """Per chunk one gather over a time-major window view of its memory map, transposed on the way."""
    n = len(starts)
    out = np.empty((n, LEADS, width), dtype=np.float32) if out is None else out
    chunk_of = starts // chunk
    local = starts - chunk_of * chunk
    inside = local + width <= chunk
    order = np.argsort(chunk_of, kind="stable")
    ks, first = np.unique(chunk_of[order], return_index=True)
    bounds = [*first.tolist(), n]
    for j, k in enumerate(ks.tolist()):
        rows = order[bounds[j]:bounds[j + 1]]
        rows = rows[inside[rows]]
        m = _CHUNK_MAPS.get(store_path, version, chunk, k, verifier)
        # windows[t] is the (width, leads) run starting at sample t: a view, no copy
        windows = as_strided(m, shape=(m.shape[0] - width + 1, width, LEADS),
                             strides=(m.strides[0], m.strides[0], m.strides[1]), writeable=False)
        out[rows] = windows[local[rows]].transpose(0, 2, 1)
    for i in np.flatnonzero(~inside).tolist():  # the rare crop that straddles two chunks
        k, at = int(chunk_of[i]), int(local[i])
        out[i] = np.concatenate([_CHUNK_MAPS.get(store_path, version, chunk, k, verifier)[at:],
                                 _CHUNK_MAPS.get(store_path, version, chunk, k + 1, verifier)[:width - (chunk - at)]]).T
    return out


# ----------------------------------------------------------------------------- zarr reads

def read_span(store_path: str, offsets: np.ndarray, lengths: np.ndarray,
              store_version: str = "", verify: bool = True, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Signals covering the given records (sorted by offset) and each record's start within them.

    With ``verify`` each chunk is checked against its checksum as zarr fetches it (first touch),
    and, with ``finite``, the span for NaN/inf (a caller that checks what it cuts passes False).
    """
    array = _signals(store_path, store_version, verify)
    start, stop = int(offsets[0]), int(offsets[-1] + lengths[-1])
    wanted = int(lengths.sum())
    if wanted >= _DENSE_READ_SHARE * (stop - start):
        span = array[start:stop]
        if verify and finite:
            check_finite(store_path, span, start)
        return span, offsets - start
    # Sparse selection: read each run of consecutive records separately and pack them.
    ends = offsets + lengths
    breaks = np.flatnonzero(offsets[1:] != ends[:-1]) + 1
    pieces, rel, pos = [], np.empty_like(offsets), 0
    for run in np.split(np.arange(len(offsets)), breaks):
        a, b = int(offsets[run[0]]), int(ends[run[-1]])
        pieces.append(array[a:b])
        if verify and finite:
            check_finite(store_path, pieces[-1], a)
        rel[run] = offsets[run] - a + pos
        pos += b - a
    return np.concatenate(pieces), rel


def cut_through_zarr(store_path: str, offsets: np.ndarray, lengths: np.ndarray, starts: np.ndarray,
                     width: int, version: str = "", verify: bool = True) -> np.ndarray:
    """Crops at ``starts`` (relative to each row's record) of rows whose records are at ``offsets``.

    With ``verify`` the crops, not the span, are checked for NaN/inf: a dense span can be ten times
    the crops (gaps between the wanted records are read too), and one pass over the crops costs
    ~0.7 us per crop of 250 samples, about 1 % of decoding them (bench/RESULTS.md).
    """
    unique, first, inverse = np.unique(offsets, return_index=True, return_inverse=True)
    signal, rel = read_span(store_path, unique, lengths[first], version, verify, finite=False)
    crops = cut(signal, rel[inverse.reshape(-1)] + starts, width)
    if verify:
        check_finite_rows(store_path, crops, offsets + starts)
    return crops


def check_finite_rows(store_path: str, batch: np.ndarray, positions: np.ndarray) -> None:
    """Raise naming the records if a row of ``batch`` holds NaN/inf; ``positions``: a global sample of each row."""
    if np.isfinite(batch).all():
        return
    bad = np.flatnonzero(~np.isfinite(batch.reshape(len(batch), -1)).all(axis=1))
    raise non_finite_error(store_path, positions[bad])


@functools.lru_cache(maxsize=8)
def _signals(store_path: str, store_version: str, verify: bool = True):
    # One open array per store and process: opening a cloud store costs a metadata round trip.
    # The version (from the manifest) keeps a store re-prepared at the same path from being
    # read through a stale array.
    return open_signals(store_path, chunk_verifier(store_path, store_version) if verify else None)
