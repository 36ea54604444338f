"""Stores in cloud storage: prepared to s3://, opened, verified and streamed like local ones.

S3 is a moto server on loopback (conftest ``s3_bucket``); Ray workers reach it through the
environment that conftest sets before Ray starts, as cluster nodes do through theirs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecg_ray import storage
from ecg_ray.cli import main
from ecg_ray.data.store import MANIFEST, EcgStore
from ecg_ray.data.stream import eval_windows, select_records, train_crops
from ecg_ray.errors import StoreError


@pytest.fixture
def s3_ptbxl(ptbxl_dir, s3_bucket, capsys) -> str:
    uri = f"{s3_bucket}/stores/ptbxl100"
    code = main(["prepare", "ptbxl", str(ptbxl_dir), "--out", uri, "--no-progress", "--workers", "2", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    assert json.loads(out.out.strip().splitlines()[-1])["path"] == uri
    return uri


def test_store_prepared_to_s3_matches_the_local_one(s3_ptbxl, ptbxl_store):
    remote, local = EcgStore(s3_ptbxl), EcgStore(ptbxl_store)
    assert remote.path == s3_ptbxl and len(remote) == len(local) == 500
    assert remote.records.equals(local.records)
    np.testing.assert_array_equal(remote.label_matrix(), local.label_matrix())
    assert remote.manifest["checksums"] == local.manifest["checksums"]
    for index in (0, 137, 499):
        np.testing.assert_array_equal(remote.signal(index), local.signal(index))
    assert remote.verify() == []
    # nothing of the local staging directory is left behind on the cloud side
    assert {name.split("/")[0] for name, _ in storage.list_files(s3_ptbxl)} == \
        {"zarr.json", "signals", "records.parquet", "labels.parquet", MANIFEST}


def test_inspect_verify_on_s3_detects_a_changed_chunk(s3_ptbxl, capsys):
    assert main(["inspect", s3_ptbxl, "--verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["verified"] is True
    chunk = storage.join(s3_ptbxl, "signals", "c", "0", "0")
    data = bytearray(storage.read_bytes(chunk))
    data[100] ^= 0xFF
    storage.write_bytes(bytes(data), chunk)
    assert main(["inspect", s3_ptbxl, "--verify", "--json"]) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["problems"] == \
        ["signals/c/0/0: checksum mismatch"]


def test_existing_s3_store_is_kept_unless_overwrite(s3_ptbxl, ptbxl_dir, capsys):
    assert main(["prepare", "ptbxl", str(ptbxl_dir), "--out", s3_ptbxl, "--no-progress"]) == 2
    assert "already exists (use --overwrite" in capsys.readouterr().err
    assert main(["prepare", "synthetic", "--records", "20", "--out", s3_ptbxl, "--overwrite",
                 "--no-progress"]) == 0
    store = EcgStore(s3_ptbxl)
    assert len(store) == 20 and store.verify() == []  # no file of the old store is left over


def test_s3_store_without_manifest_is_an_interrupted_prepare(s3_ptbxl):
    storage.delete_file(storage.join(s3_ptbxl, MANIFEST))
    with pytest.raises(StoreError, match="no manifest.json; not an ecg_ray store, or an interrupted prepare"):
        EcgStore(s3_ptbxl)
    with pytest.raises(StoreError, match="no such store directory"):
        EcgStore(s3_ptbxl + "-missing")


def _rows(dataset):
    batches = list(dataset.iter_batches(batch_size=128, batch_format="numpy"))
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.lexsort([rows.get("window_index", rows["record_index"]), rows["record_index"]])
    return {k: v[order] for k, v in rows.items()}


def test_stream_from_s3_gives_the_same_crops_and_windows_as_local(ray_session, s3_ptbxl, ptbxl_store):
    # Local stores are cut from memory-mapped chunks, cloud stores through zarr + obstore: same data.
    train = select_records(EcgStore(ptbxl_store), folds=range(1, 9))
    # The same shuffle on both (a cloud store defaults to a block shuffle, a local raw one to a full one).
    remote = _rows(train_crops(s3_ptbxl, train, seed=5, with_labels=True, shuffle_block=1)[0])
    local = _rows(train_crops(ptbxl_store, train, seed=5, with_labels=True, shuffle_block=1)[0])
    assert len(remote["record_index"]) == 353
    for key in ("record_index", "signal", "labels"):
        np.testing.assert_array_equal(remote[key], local[key])
    test = select_records(EcgStore(ptbxl_store), folds=[10])
    remote = _rows(eval_windows(s3_ptbxl, test, window=250, stride=125)[0])
    local = _rows(eval_windows(ptbxl_store, test, window=250, stride=125)[0])
    assert len(remote["record_index"]) == 66 * 7
    np.testing.assert_array_equal(remote["signal"], local["signal"])
