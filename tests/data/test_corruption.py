"""Corrupt data never trains silently (issue #16): damaged chunks, NaN/inf samples, broken tables.

Stream tests use 12,000 short synthetic records (6 chunks of 131,072 samples) read by 12 read
tasks in store order, so the damaged chunk in the middle is met by some tasks and not others.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from ecg_ray.cli import main
from ecg_ray.data import integrity
from ecg_ray.data.integrity import ChunkVerifier
from ecg_ray.data.store import DEFAULT_CHUNK_SAMPLES, EcgStore, checksum_files
from ecg_ray.data.stream import eval_windows, train_crops
from ecg_ray.errors import StoreError
from tests.data.synthetic_stores import grouped_store

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"
RECORDS, LENGTH, CROP, PER_TASK = 12_000, 60, 50, 1000
BAD_CHUNK = 3  # of chunks 0..5


def _store(tmp_path: Path, codec: str = "none", name: str = "s") -> Path:
    return grouped_store(tmp_path / f"{name}-{codec}", {"A": RECORDS}, length=LENGTH, codec=codec)


def _chunk_file(store: Path, k: int) -> Path:
    return store / "signals" / "c" / str(k) / "0"


def _flip_byte(store: Path, k: int) -> None:
    data = bytearray(_chunk_file(store, k).read_bytes())
    data[len(data) // 2] ^= 0x10
    _chunk_file(store, k).write_bytes(bytes(data))


def _ids_in_chunk(store: Path, k: int) -> list[str]:
    records = EcgStore(store).records
    start, stop = k * DEFAULT_CHUNK_SAMPLES, (k + 1) * DEFAULT_CHUNK_SAMPLES
    inside = (records["offset"] < stop) & (records["offset"] + records["length"] > start)
    return records["id"][inside].tolist()


def _poison(store: Path, record: int, value: float = np.nan) -> str:
    """Write ``value`` into one record and re-seal the manifest: a store an older version wrote with NaN."""
    records = EcgStore(store).records
    array = zarr.open_array(str(store / "signals"), mode="r+")
    array[int(records["offset"][record]) + 7, 3] = value
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["checksums"] = checksum_files(store)
    (store / "manifest.json").write_text(json.dumps(manifest))
    return str(records["id"][record])


def _store_error(exc: BaseException) -> StoreError:
    """The StoreError a read task raised, from inside Ray's wrappers (RayTaskError, UserCodeException)."""
    from ray.exceptions import RayTaskError

    current, seen = exc, set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreError) and not isinstance(current, RayTaskError):
            return current
        inner = current.__dict__.get("cause")
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)
    raise AssertionError(f"no StoreError inside {exc!r}")


def _stream(store: Path, **kwargs) -> dict[str, np.ndarray]:
    dataset, info = train_crops(store, crop=CROP, seed=1, shuffle=False, records_per_task=PER_TASK, **kwargs)
    assert info.read_tasks == RECORDS // PER_TASK
    batches = list(dataset.iter_batches(batch_size=4096, batch_format="numpy"))
    return {k: np.concatenate([b[k] for b in batches]) for k in ("signal", "record_index")}


def _stream_error(store: Path, stream=_stream) -> str:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - Ray wraps it; unwrapped below
        stream(store)
    # Ray Data appends its retry advice on further lines; the user is told the first (ecg_ray.train.failures)
    return str(_store_error(caught.value)).splitlines()[0]


# ----------------------------------------------------------------------------- flipped byte

@pytest.mark.parametrize("reader", ["mapped", "preadv", "zstd"])
def test_flipped_byte_stops_the_stream_naming_store_chunk_and_records(reader, ray_session, tmp_path, monkeypatch):
    store = _store(tmp_path, "zstd" if reader == "zstd" else "none")
    if reader == "preadv":  # the reader of stores too large to keep every chunk mapped
        monkeypatch.setattr("ecg_ray.data.stream.MAPPED_CHUNKS", 0)
    _flip_byte(store, BAD_CHUNK)
    message = _stream_error(store)
    ids = _ids_in_chunk(store, BAD_CHUNK)
    assert str(store) in message and f"chunk signals/c/{BAD_CHUNK}/0 is corrupt" in message
    assert f"{len(ids)} records {ids[0]} .. {ids[-1]}" in message


def test_flipped_byte_in_a_record_read_for_evaluation(tmp_path):
    for codec in ("none", "zstd"):
        store = _store(tmp_path, codec)
        _flip_byte(store, BAD_CHUNK)
        opened = EcgStore(store)
        assert opened.signal(0)[0, 0] == 0  # chunk 0 is intact
        with pytest.raises(StoreError, match=rf"{store}: chunk signals/c/{BAD_CHUNK}/0 is corrupt"):
            opened.signal(int(_ids_in_chunk(store, BAD_CHUNK)[5][1:]))


def test_missing_chunk_file_is_corruption_not_zeros(ray_session, tmp_path):
    store = _store(tmp_path)
    _chunk_file(store, BAD_CHUNK).unlink()
    assert f"chunk signals/c/{BAD_CHUNK}/0 is missing" in _stream_error(store)


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_intact_store_streams_identical_data_with_the_check_on(codec, ray_session, tmp_path):
    store = _store(tmp_path, codec)
    checked, unchecked = _stream(store), _stream(store, verify=False)
    np.testing.assert_array_equal(checked["signal"], unchecked["signal"])
    np.testing.assert_array_equal(checked["record_index"], np.arange(RECORDS))
    # every crop is its own record's (lead 0 holds the record number, lead 1 the sample number)
    np.testing.assert_array_equal(checked["signal"][:, 0, :], np.repeat(np.arange(RECORDS), CROP).reshape(-1, CROP))
    assert (np.diff(checked["signal"][:, 1, :], axis=1) == 1).all()
    # the read tasks (other processes) verified every chunk and said so node-wide for this run
    driver_view = ChunkVerifier(str(store), EcgStore(store).manifest)
    assert driver_view._bitmap is not None
    assert all(driver_view.is_verified(k) for k in range(len(driver_view.listed)))


def test_a_chunk_is_hashed_once_per_node_and_run(tmp_path, monkeypatch):
    store = _store(tmp_path)
    manifest = EcgStore(store).manifest
    monkeypatch.setattr(integrity, "_bitmap_dir", lambda: tmp_path / "verified")
    monkeypatch.setattr(integrity, "_run_key", lambda: "node-1:job-1")
    ChunkVerifier(str(store), manifest).check_file(BAD_CHUNK, str(_chunk_file(store, BAD_CHUNK)))
    _flip_byte(store, BAD_CHUNK)
    # another process of the same run trusts the node-wide mark (no second hash of the chunk) ...
    other = ChunkVerifier(str(store), manifest)
    other.check_file(BAD_CHUNK, str(_chunk_file(store, BAD_CHUNK)))
    assert other.is_verified(BAD_CHUNK) and not other.is_verified(BAD_CHUNK + 1)
    # ... the next run hashes it again and finds the damage, and so does a process outside Ray
    for run in ("node-1:job-2", None):
        monkeypatch.setattr(integrity, "_run_key", lambda run=run: run)
        with pytest.raises(StoreError, match=f"signals/c/{BAD_CHUNK}/0 is corrupt"):
            ChunkVerifier(str(store), manifest).check_file(BAD_CHUNK, str(_chunk_file(store, BAD_CHUNK)))


def test_a_chunk_another_process_is_hashing_is_waited_for_not_hashed_again(tmp_path, monkeypatch):
    """The claim (a lock on the chunk's byte of the node bitmap) keeps processes that start together
    from all hashing the same chunks: here another process holds chunk 3 and marks it verified."""
    import subprocess
    import sys
    import time

    store = _store(tmp_path)
    monkeypatch.setattr(integrity, "_bitmap_dir", lambda: tmp_path / "verified")
    monkeypatch.setattr(integrity, "_run_key", lambda: "node-1:job-1")
    verifier = ChunkVerifier(str(store), EcgStore(store).manifest)
    bitmap = next((tmp_path / "verified").glob("*.bits"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(bitmap)!r}, os.O_RDWR)\n"
        f"fcntl.lockf(fd, fcntl.LOCK_EX, 1, {BAD_CHUNK}, os.SEEK_SET)\n"
        "print('locked', flush=True)\n"
        "time.sleep(1.0)\n"
        f"os.pwrite(fd, b'\\x01', {BAD_CHUNK})\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    _flip_byte(store, BAD_CHUNK)  # hashing it here would fail: only waiting for the holder passes
    start = time.perf_counter()
    verifier.check_files([BAD_CHUNK, BAD_CHUNK + 1], lambda k: str(_chunk_file(store, k)))
    assert time.perf_counter() - start > 0.3 and holder.wait(timeout=10) == 0
    assert verifier.is_verified(BAD_CHUNK) and verifier.is_verified(BAD_CHUNK + 1)


def test_verifier_keeps_32_bytes_per_chunk(tmp_path):
    """The per-process cost of the expected digests: 32 bytes per chunk, equal to the manifest's hex."""
    store = _store(tmp_path)
    manifest = EcgStore(store).manifest
    verifier = ChunkVerifier(str(store), manifest)
    assert verifier.expected.nbytes == 32 * 6 and verifier.listed.all()
    assert verifier.expected[2].tobytes().hex() == manifest["checksums"]["signals/c/2/0"]
    assert hashlib.sha256(_chunk_file(store, 2).read_bytes()).digest() == verifier.expected[2].tobytes()


# ----------------------------------------------------------------------------- NaN / inf

@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_nan_record_stops_the_stream_naming_store_and_record(codec, ray_session, tmp_path):
    store = _store(tmp_path, codec)
    record_id = _poison(store, 7_000)
    message = _stream_error(store)
    assert str(store) in message and f"NaN or inf samples in record {record_id}" in message
    assert "optim.lr" not in message


def test_inf_record_in_evaluation_windows(ray_session, tmp_path):
    store = _store(tmp_path, "none", name="inf")
    record_id = _poison(store, 11_500, np.inf)

    def windows(path):
        dataset, info = eval_windows(path, window=CROP, stride=10, with_labels=False, records_per_task=PER_TASK)
        assert info.read_tasks == RECORDS // PER_TASK
        list(dataset.iter_batches(batch_size=4096))

    message = _stream_error(store, windows)
    assert str(store) in message and f"NaN or inf samples in record {record_id}" in message


def test_nan_record_read_for_evaluation(tmp_path):
    for codec in ("none", "zstd"):
        store = _store(tmp_path, codec)
        record_id = _poison(store, 42)
        opened = EcgStore(store)
        opened.signal(41)
        with pytest.raises(StoreError, match=rf"{store}: record {record_id} \(index 42\) holds 1 non-finite"):
            opened.signal(42)


def test_prepare_rejects_samples_beyond_float32(tmp_path):
    """A finite float64 sample past float32's range would be stored as inf: prepare names the record instead."""
    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.arrays import ArraySource

    data = np.ones((3, 500, 12))
    data[1, 10, 2] = 1e39
    np.save(tmp_path / "x.npy", data)
    manifest = prepare_store([ArraySource(tmp_path / "x.npy", fs=100)], tmp_path / "s", workers=1, progress=False)
    assert manifest["records"] == 2
    (skipped,) = manifest["skipped"]
    assert "float32 range" in skipped["reason"] and "x.npy" in skipped["file"]


# ----------------------------------------------------------------------------- broken tables

@pytest.mark.parametrize("table", ["records.parquet", "labels.parquet"])
def test_truncated_table_in_inspect_verify_and_stream(table, tmp_path, capsys):
    store = grouped_store(tmp_path / "s", {"A": 300, "B": 300}, length=LENGTH)
    path = store / table
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    assert main(["inspect", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"ecg-ray inspect: error: {path}: unreadable table (" + err.split("(", 1)[1])
    assert "\n" not in err and "magic bytes" in err and "inspect --verify" in err

    # --verify still verifies every file and reports the table like any other checksum failure
    assert main(["inspect", str(store), "--verify", "--json"]) == 1
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["verified"] is False and summary["problems"] == [f"{table}: checksum mismatch"]
    assert f"VERIFY FAILED: {table}: checksum mismatch" in out

    # the stream (and so pretrain's driver) stops at open, before any read task
    with pytest.raises(StoreError, match=rf"^{path}: unreadable table"):
        train_crops(store, crop=CROP, with_labels=True)


def test_truncated_table_stops_pretrain_before_ray_starts(tmp_path, capsys):
    store = grouped_store(tmp_path / "s", {"A": 300}, length=300)
    path = store / "labels.parquet"
    path.write_bytes(path.read_bytes()[:100])
    out = tmp_path / "runs"
    code = main(["pretrain", "--store", str(store), "--config", str(JOBS / "simclr.yaml"), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"ecg-ray pretrain: error: {path}: unreadable table") and "\n" not in err
    assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_pretrain_on_a_store_with_a_flipped_byte_fails_naming_the_chunk(ray_session, ptbxl_store, tmp_path, capsys):
    """The issue's case: this trained with exit status 0; it now stops in epoch 0 with one line."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(ptbxl_store, store)
    _flip_byte(store, 2)
    code = main(["pretrain", "--config", str(JOBS / "simclr.yaml"), "--store", str(store), "--workers", "1",
                 "--epochs", "1", "--set", "train.max_failures=0", "--set", "train.probe=false",
                 "--output", str(tmp_path / "runs")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    ids = _ids_in_chunk(store, 2)
    assert code == 2 and last.startswith("ecg-ray pretrain: error: ")
    assert f"{store}: chunk signals/c/2/0 is corrupt" in last and f"{len(ids)} records {ids[0]} .. {ids[-1]}" in last


def test_unlabelled_store_verifies_clean(tmp_path):
    """A label table without columns keeps no row count in Parquet: not a mismatch with records.parquet."""
    from ecg_ray.data.sources.base import Record
    from ecg_ray.data.store_writer import StoreWriter

    writer = StoreWriter(tmp_path / "unlabelled", fs=100.0)
    for i in range(3):
        writer.add(Record(id=f"r{i}", dataset="d", file="f", signal=np.zeros((300, 12), np.float32), fs=100.0,
                          fs_original=100.0, labels=[], metadata={}))
    writer.finalize(sources=[{"kind": "test"}], label_names=None)
    assert EcgStore(tmp_path / "unlabelled").verify() == []
