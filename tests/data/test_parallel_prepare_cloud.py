"""``prepare --ray`` to a cloud ``--out``: chunks written by the tasks straight to a staging prefix.

S3 is the moto server on loopback (conftest ``s3_bucket``); the Ray workers reach it through the
environment conftest sets before Ray starts. The store must equal the process pool's local store
file for file, no chunk may pass through the driver (it only asks for server-side copies), and
no staging prefix may outlive the run, whether it succeeds, fails or was killed earlier.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_ray import storage
from ecg_ray.data import staging
from ecg_ray.data.parallel_prepare import prepare_on_ray
from ecg_ray.data.prepare import prepare_store
from ecg_ray.data.store import MANIFEST, EcgStore
from ecg_ray.errors import EcgRayError
from tests.cli import run_json
from tests.data.parallel_sources import ShortRecords
from tests.data.test_parallel_prepare import CHUNK, CLUSTER_SCRIPT, NETNS, N, _exclusions, _kept_refs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool") / "short"
    prepare_store([ShortRecords(N)], out, exclusions=_exclusions(), chunk_samples=CHUNK, workers=2, progress=False)
    return out


def _remote_hashes(uri: str) -> dict[str, str]:
    return {rel: hashlib.sha256(storage.read_bytes(storage.join(uri, rel))).hexdigest()
            for rel, _ in storage.list_files(uri) if rel != MANIFEST}


def _local_hashes(store: Path) -> dict[str, str]:
    return {p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _manifest(text: str) -> dict:
    manifest = json.loads(text)
    manifest.pop("created")
    return manifest


def _partials(uri: str) -> list[str]:
    return storage.list_dirs(storage.parent(uri), f".{storage.name(uri)}.partial-*")


def test_ray_store_on_s3_equals_the_pool_store_and_no_chunk_passes_the_driver(ray_session, s3_bucket, pool_store,
                                                                                monkeypatch):
    uri = f"{s3_bucket}/stores/short"
    copied, uploaded = [], []
    copy_files, upload_dir = storage.copy_files, storage.upload_dir

    def spy_copy(pairs, **kwargs):
        copied.extend(pairs)
        return copy_files(pairs, **kwargs)

    def spy_upload(local, location, **kwargs):
        uploaded.extend(p.relative_to(local).as_posix() for p in Path(local).rglob("*") if p.is_file())
        return upload_dir(local, location, **kwargs)

    monkeypatch.setattr(storage, "copy_files", spy_copy)
    monkeypatch.setattr(storage, "upload_dir", spy_upload)
    manifest, stats = prepare_on_ray([ShortRecords(N)], uri, exclusions=_exclusions(), chunk_samples=CHUNK,
                                     progress=False, records_per_task=700, chunks_per_task=4)
    assert stats.read_tasks == 15 and stats.write_tasks > 1

    assert _remote_hashes(uri) == _local_hashes(pool_store)
    assert _manifest(storage.read_text(storage.join(uri, MANIFEST))) == \
        _manifest((pool_store / MANIFEST).read_text())
    # Every chunk reached its place by a server-side copy from the staging prefix; the driver uploaded
    # only metadata and tables.
    chunks = sorted(rel for rel in manifest["checksums"] if rel.startswith("signals/c/"))
    assert len(chunks) == len(list((pool_store / "signals" / "c").iterdir())) > 40
    assert sorted(storage.name(dst) for _, dst in copied) == sorted(rel.rsplit("/", 1)[-1] for rel in chunks)
    assert all("/.short.partial-" in src for src, _ in copied)
    assert sorted(uploaded) == ["labels.parquet", MANIFEST, "records.parquet", "signals/zarr.json", "zarr.json"]
    assert _partials(uri) == []  # the staging prefix (batch files, chunks, owner file) is gone

    store = EcgStore(uri)
    assert list(store.records["id"]) == [f"r{i:06d}" for i in _kept_refs(N)]
    assert store.verify() == []


def test_a_failed_ray_overwrite_on_s3_keeps_the_old_store(ray_session, s3_bucket):
    uri = f"{s3_bucket}/stores/short"
    prepare_store([ShortRecords(300)], uri, chunk_samples=CHUNK, workers=1, progress=False)
    old = _remote_hashes(uri)
    with pytest.raises(EcgRayError, match=r"injected failure at r004321"):
        prepare_on_ray([ShortRecords(N, fail_at=4321)], uri, chunk_samples=CHUNK, overwrite=True, progress=False,
                       records_per_task=500)
    assert _remote_hashes(uri) == old and EcgStore(uri).verify() == []
    assert _partials(uri) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _fake_partial(uri: str, suffix: str, owner: dict | None) -> str:
    prefix = storage.join(storage.parent(uri), f".{storage.name(uri)}.partial-{suffix}")
    storage.write_bytes(b"\0" * 4096, storage.join(prefix, ".read-batches", "00000000.f32"))
    if owner is not None:
        storage.write_text(json.dumps(owner), storage.join(prefix, staging.OWNER_FILE))
    return prefix


def test_stale_staging_prefixes_of_the_target_are_removed_and_others_kept(s3_bucket, monkeypatch, caplog):
    uri = f"{s3_bucket}/stores/short"
    host = socket.gethostname()
    dead = _fake_partial(uri, "0000dead", {"target": uri, "host": host, "pid": _dead_pid(), "process_start": None})
    live = _fake_partial(uri, "0000a11e", {"target": uri, "host": host, "pid": os.getpid(),
                                           "process_start": staging.process_start(os.getpid())})
    elsewhere = _fake_partial(uri, "00e15e00", {"target": uri, "host": "another-node", "pid": 1})
    other_target = _fake_partial(uri, "0000beef", {"target": uri + "2", "host": host, "pid": _dead_pid()})
    unmarked = _fake_partial(uri, "00000000", None)

    with caplog.at_level("WARNING"):
        prepare_store([ShortRecords(50)], uri, chunk_samples=CHUNK, workers=1, progress=False)
    assert "removed 1 stale partial store(s)" in caplog.text and "freed 4.2 kB" in caplog.text  # batch + owner file
    assert _partials(uri) == sorted([live, elsewhere, other_target, unmarked])

    # Another host's prefix goes once nothing under it changed for REMOTE_STALE_AFTER_S.
    monkeypatch.setattr(staging, "REMOTE_STALE_AFTER_S", 0.0)
    assert staging.stale_remote_staging(uri) == [elsewhere]
    assert dead not in _partials(uri)


def test_cli_prepare_with_ray_to_s3_equals_without(ray_session, s3_bucket, capsys):
    args = ["prepare", "synthetic", "--records", "60", "--chunk-samples", "4096", "--no-progress"]
    plain = run_json(capsys, *args, "--out", f"{s3_bucket}/plain")
    on_ray = run_json(capsys, *args, "--out", f"{s3_bucket}/ray", "--ray")
    assert on_ray["records"] == plain["records"] == 60 and on_ray["path"] == f"{s3_bucket}/ray"
    assert _remote_hashes(f"{s3_bucket}/ray") == _remote_hashes(f"{s3_bucket}/plain")


def test_two_node_cluster_prepares_to_s3_without_a_shared_staging_directory(tmp_path):
    pytest.importorskip("moto.server", reason="moto[server] is a dev dependency (pip install -e .[dev])")
    records = 3000
    prepare_store([ShortRecords(records)], tmp_path / "pool", chunk_samples=4096, workers=2, progress=False)
    proc = subprocess.run([sys.executable, str(NETNS), sys.executable, str(CLUSTER_SCRIPT), "s3", str(records)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["nodes"]) == 2
    assert sorted(result["read_nodes"]) == sorted(result["write_nodes"]) == result["nodes"], result
    assert result["files"] == _local_hashes(tmp_path / "pool")
    result["manifest"].pop("created")
    assert result["manifest"] == _manifest((tmp_path / "pool" / MANIFEST).read_text())
    assert result["partials"] == []
