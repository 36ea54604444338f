"""``ecg-ray embed`` reads both export formats and a run directory alike: the same rows from each."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from tests.cli import run_json
from tests.portable.conftest import write_run


def _embeddings(path) -> np.ndarray:
    column = pq.read_table(path).column("embedding").combine_chunks()
    return column.values.to_numpy().reshape(len(column), column.type.list_size)


def test_safetensors_folder_torch_file_and_run_dir_embed_the_same(ray_session, ptbxl_store, tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run)  # xresnet1d50 weights with non-default BatchNorm statistics
    run_json(capsys, "export", run, "--out", tmp_path / "encoder.pt")
    run_json(capsys, "export", run, "--format", "safetensors", "--out", tmp_path / "folder")
    sources = {"torch": ["--encoder", tmp_path / "encoder.pt"],
               "safetensors": ["--encoder", tmp_path / "folder"],
               "run": ["--pretrained", run]}
    rows = {}
    for name, source in sources.items():
        out = tmp_path / f"{name}.parquet"
        summary = run_json(capsys, "embed", *source, "--store", ptbxl_store, "--out", out, "--folds", "10")
        assert summary["dim"] == 512 and summary["records"] == 66
        rows[name] = _embeddings(out)
    assert np.isfinite(rows["torch"]).all() and rows["torch"].std(axis=0).max() > 0
    np.testing.assert_array_equal(rows["safetensors"], rows["torch"])
    np.testing.assert_array_equal(rows["run"], rows["torch"])


def test_a_killed_runs_staging_file_is_removed_by_the_next_run(tmp_path):
    """A run killed before its rename leaves .NAME.tmp-PID-XXXX beside the target: the next writer removes it
    when that PID is gone (or the file is a day old), and keeps a live writer's file."""
    import os
    import subprocess
    import sys
    import time

    from ecg_ray.embedding.parquet import STALE_AFTER_S, remove_stale_staging

    target = tmp_path / "emb.parquet"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_file = tmp_path / f".emb.parquet.tmp-{int(dead.stdout)}-abc123"
    live_file = tmp_path / f".emb.parquet.tmp-{os.getpid()}-def456"
    old_live = tmp_path / f".emb.parquet.tmp-{os.getpid()}-0ld000"
    other = tmp_path / f".other.parquet.tmp-{int(dead.stdout)}-abc123"
    for path in (dead_file, live_file, old_live, other):
        path.write_bytes(b"PAR1")
    day_ago = time.time() - STALE_AFTER_S - 60
    os.utime(old_live, (day_ago, day_ago))
    removed = remove_stale_staging(target)
    assert sorted(removed) == sorted([dead_file, old_live])
    assert live_file.exists() and other.exists() and not dead_file.exists()
