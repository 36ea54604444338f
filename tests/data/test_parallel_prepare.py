"""``prepare --ray``: the store written by Ray tasks is the process pool's store, bit for bit.

Every comparison hashes every file of both stores (the zarr chunk files, the array and group
metadata, both Parquet tables) and compares the manifests without their ``created`` time. The
stores hold skipped, excluded and verbatim-labelled records, more than one chunk and more than
one read and write task.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecg_ray.data.parallel_prepare import prepare_on_ray, ray_wanted
from ecg_ray.data.prepare import Exclusions, prepare_store
from ecg_ray.data.store import MANIFEST, EcgStore
from ecg_ray.errors import EcgRayError, RecordError
from tests.cli import run_json
from tests.data.parallel_sources import ShortRecords

N = 10_000
CHUNK = 8192  # ~400k samples in all: 49 chunks
CLUSTER_SCRIPT = Path(__file__).with_name("prepare_cluster.py")
# Ray's second node must reach the head on loopback: the script runs where 127.0.0.1 is the only
# address (as under `make test`; netns.py runs it directly when already there).
NETNS = Path(__file__).resolve().parents[1] / "netns.py"


def _exclusions() -> Exclusions:
    return Exclusions(folds={3}, patients={"p11", "p500"})


def _kept_refs(n: int, skip_every: int = 997) -> list[int]:
    """The refs a store of ShortRecords(n) keeps under ``_exclusions()``, computed independently."""
    return [i for i in range(n) if i % skip_every != 5 and 1 + i % 10 != 3 and f"p{i // 2}" not in {"p11", "p500"}]


def _file_hashes(store: Path) -> dict[str, str]:
    return {p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _manifest_without_time(store: Path) -> dict:
    manifest = json.loads((store / MANIFEST).read_text())
    manifest.pop("created")
    return manifest


def assert_same_store(expected: Path, actual: Path) -> None:
    expected_files, actual_files = _file_hashes(expected), _file_hashes(actual)
    assert sorted(actual_files) == sorted(expected_files)
    assert [f for f in expected_files if expected_files[f] != actual_files[f]] == []
    assert _manifest_without_time(actual) == _manifest_without_time(expected)


@pytest.fixture(scope="module")
def pool_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool") / "short"
    prepare_store([ShortRecords(N)], out, exclusions=_exclusions(), chunk_samples=CHUNK, workers=2, progress=False)
    return out


def test_ray_store_equals_the_pool_store_on_10k_short_records(ray_session, pool_store, tmp_path):
    out = tmp_path / "ray"
    manifest, stats = prepare_on_ray([ShortRecords(N)], out, exclusions=_exclusions(), chunk_samples=CHUNK,
                                     progress=False, records_per_task=700, chunks_per_task=4)
    assert stats.read_tasks == math.ceil(N / 700) and stats.write_tasks == math.ceil(manifest["samples"] / CHUNK / 4)
    assert stats.write_tasks > 1 and manifest["samples"] > 40 * CHUNK
    assert_same_store(pool_store, out)

    kept = _kept_refs(N)
    store = EcgStore(out)
    assert list(store.records["id"]) == [f"r{i:06d}" for i in kept]
    assert [s["id"] for s in manifest["skipped"]] == [f"r{i:06d}" for i in range(5, N, 997)]
    assert manifest["skipped"][0] == {"id": "r000005", "file": "short/5.dat", "reason": "truncated data"}
    # r001002 (fold 3) is skipped before exclusions apply; r000022 (patient p11) is in fold 3.
    assert manifest["excluded"] == {"fold=3": N // 10 - 1, "patient listed": 3}
    assert manifest["label_warnings"]["unmapped"] == {"odd text": sum(1 for i in kept if i % 1000 == 7)}
    # Records straddling chunk and task boundaries come back whole, in place.
    for index in (0, 1, len(kept) // 2, len(kept) - 1, *np.linspace(0, len(kept) - 1, 40).astype(int)):
        ref, signal = kept[index], store.signal(int(index))
        assert signal.shape == (20 + (ref * 7) % 50, 12)
        np.testing.assert_array_equal(signal[:, 0], ref)
        np.testing.assert_array_equal(signal[:, 1], np.arange(len(signal)))
    assert store.verify() == []


def _ptbxl_sample(ptbxl_dir):
    """The first 100 PTB-XL records, one of them with an SCP code the statements table lacks."""
    from ecg_ray.data.sources.ptbxl import PtbxlSource

    source = PtbxlSource(ptbxl_dir)
    source.db = source.db.iloc[:100].copy()
    source.db.loc[source.db.index[4], "scp_codes"] = "{'NOT_A_CODE': 100.0}"
    return source


def test_ray_store_equals_the_pool_store_on_ptbxl(ray_session, ptbxl_dir, tmp_path):
    exclusions = Exclusions(folds={10})
    pool = prepare_store([_ptbxl_sample(ptbxl_dir)], tmp_path / "pool", exclusions=exclusions, chunk_samples=16384,
                         workers=2, progress=False)
    manifest, stats = prepare_on_ray([_ptbxl_sample(ptbxl_dir)], tmp_path / "ray", exclusions=exclusions,
                                     chunk_samples=16384, progress=False, records_per_task=16, chunks_per_task=2)
    assert stats.read_tasks == 7 and stats.write_tasks == 3
    assert_same_store(tmp_path / "pool", tmp_path / "ray")
    assert [s["id"] for s in manifest["skipped"]] == ["5"] and "NOT_A_CODE" in manifest["skipped"][0]["reason"]
    assert manifest["excluded"] == pool["excluded"] and manifest["excluded"]["fold=10"] > 0
    assert manifest["records"] == 99 - manifest["excluded"]["fold=10"]


def test_a_failing_task_leaves_no_store_and_a_rerun_gives_the_pool_store(ray_session, pool_store, tmp_path):
    out = tmp_path / "ray"
    with pytest.raises(EcgRayError, match=r"injected failure at r004321") as failure:
        prepare_on_ray([ShortRecords(N, fail_at=4321)], out, exclusions=_exclusions(), chunk_samples=CHUNK,
                       progress=False, records_per_task=500)
    assert "\n" not in str(failure.value) and str(out) in str(failure.value)
    assert list(tmp_path.iterdir()) == []  # no store, no staging directory, no staged batch
    prepare_on_ray([ShortRecords(N)], out, exclusions=_exclusions(), chunk_samples=CHUNK, progress=False,
                   records_per_task=500)
    assert_same_store(pool_store, out)


def test_on_error_fail_stops_at_the_first_bad_record_in_source_order(ray_session, tmp_path):
    # Batches finish in any order; the error named is the first bad record of the sources.
    with pytest.raises(RecordError, match=r"short/5\.dat.*truncated data"):
        prepare_on_ray([ShortRecords(3000, skip_every=400)], tmp_path / "ray", on_error="fail", progress=False,
                       records_per_task=50)
    assert list(tmp_path.iterdir()) == []


def test_cli_prepare_with_ray_equals_without(ray_session, tmp_path, capsys):
    args = ["prepare", "synthetic", "--records", "60", "--chunk-samples", "4096", "--no-progress"]
    plain = run_json(capsys, *args, "--out", tmp_path / "plain")
    on_ray = run_json(capsys, *args, "--out", tmp_path / "ray", "--ray")
    assert on_ray["records"] == plain["records"] == 60
    assert_same_store(tmp_path / "plain", tmp_path / "ray")


def test_ray_is_used_when_ray_address_names_a_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray_wanted(False) and ray_wanted(True)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert ray_wanted(False)
    monkeypatch.setenv("RAY_ADDRESS", "local")  # a fresh one-node instance, not a cluster
    assert not ray_wanted(False)


def test_two_node_cluster_runs_tasks_on_both_nodes_and_gives_the_pool_store(tmp_path):
    records = 3000
    prepare_store([ShortRecords(records)], tmp_path / "pool", chunk_samples=4096, workers=2, progress=False)
    proc = subprocess.run([sys.executable, str(NETNS), sys.executable, str(CLUSTER_SCRIPT), str(tmp_path / "ray"),
                           str(records)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["nodes"]) == 2
    assert sorted(result["read_nodes"]) == result["nodes"], result
    assert sorted(result["write_nodes"]) == result["nodes"], result
    assert sum(result["read_nodes"].values()) == records // 100
    assert_same_store(tmp_path / "pool", tmp_path / "ray")
