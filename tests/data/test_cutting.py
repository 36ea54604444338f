"""Raw chunk readers (memory maps, preadv) against zarr: the same crops, straddling chunks included."""

from __future__ import annotations

import numpy as np

from ecg_ray.data.cutting import cut, cut_raw_chunks, cut_through_zarr, raw_chunk_count, raw_chunk_layout
from ecg_ray.data.store import EcgStore
from tests.data.synthetic_stores import grouped_store


def test_mapped_and_preadv_readers_equal_zarr(tmp_path):
    lengths = [50 + (i * 37) % 400 for i in range(300)]
    raw = EcgStore(grouped_store(tmp_path / "raw", {"A": 300}, lengths=lengths))
    zstd = EcgStore(grouped_store(tmp_path / "zstd", {"A": 300}, lengths=lengths, codec="zstd"))

    small = EcgStore(_rechunked(raw, tmp_path / "small", 997))  # many small chunks: crops straddle them
    assert raw_chunk_layout(str(small.path)) == 997 and raw_chunk_count(str(small.path)) > 50
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 300, size=2000)
    lens = small.records["length"].to_numpy()[rows]
    starts = (rng.random(2000) * (lens - 40 + 1)).astype(np.int64)
    offsets = small.records["offset"].to_numpy()[rows]
    whole = small.signals()[:]
    expected = cut(whole, offsets + starts, 40)
    for mapped in (True, False):
        got = cut_raw_chunks(str(small.path), 997, offsets + starts, 40, small.version, mapped=mapped)
        np.testing.assert_array_equal(got, expected)
    straddling = ((offsets + starts) % 997) + 40 > 997
    assert straddling.sum() > 10
    np.testing.assert_array_equal(
        cut_through_zarr(str(zstd.path), zstd.records["offset"].to_numpy()[rows], lens, starts, 40), expected)


def _rechunked(store: EcgStore, out, chunk: int):
    from ecg_ray.data.sources.base import Record
    from ecg_ray.data.store_writer import StoreWriter

    writer = StoreWriter(out, fs=store.fs, chunk_samples=chunk)
    for i in range(len(store)):
        writer.add(Record(id=str(i), dataset="a", file="", signal=store.signal(i), fs=store.fs, fs_original=store.fs,
                          labels=[], metadata={}))
    writer.finalize(sources=[{"kind": "test"}], label_names=None)
    return out


def test_crops_longer_than_a_chunk_are_read_across_chunks(tmp_path):
    """A store prepared with small chunks (100 samples) and a 250-sample crop: the memory-map reader
    steps aside and preadv reads the crop across three chunks."""
    raw = EcgStore(grouped_store(tmp_path / "raw", {"A": 20}, length=400))
    small = EcgStore(_rechunked(raw, tmp_path / "small", 100))
    starts = small.records["offset"].to_numpy()[[0, 5, 19]] + np.array([0, 77, 150])
    expected = cut(small.signals()[:], starts, 250)
    for mapped in (True, False):
        np.testing.assert_array_equal(cut_raw_chunks(str(small.path), 100, starts, 250, mapped=mapped), expected)
