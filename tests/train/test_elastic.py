"""Elastic training on a local cluster that changes size: grow from 1 to 2 workers, then shrink back.

``elastic_cluster.py`` runs in its own process with its own multi-node Ray cluster (two raylets on
127.0.0.1 via ``ray.cluster_utils.Cluster``): a pretraining with ``train.workers=1``,
``train.max_workers=2`` starts on the head's room for one worker, a node joins (Ray Train resizes
to two workers from the last checkpoint), then that node is removed, as when a spot instance is
reclaimed (the run restarts on one worker from its last committed checkpoint).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("elastic_cluster.py")


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory) -> Path:
    from ecg_ray.cli import main

    out = tmp_path_factory.mktemp("elastic") / "synthetic"
    assert main(["prepare", "synthetic", "--records", "300", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_run_grows_when_a_node_joins_and_shrinks_when_it_leaves(synthetic_store, tmp_path):
    epochs = 12
    proc = subprocess.run([sys.executable, str(SCRIPT), str(synthetic_store), str(tmp_path / "runs"), "--shrink",
                           f"--epochs={epochs}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result["error"]
    assert [e["event"] for e in result["events"]] == ["node_added", "node_removed"]
    # Every epoch is in the final history exactly once: nothing lost, nothing repeated.
    assert result["epochs"] == list(range(epochs))
    sizes, starts = result["world_size"], result["start_epoch"]
    # 1 worker, then 2 after the node joined, then 1 again after it left.
    phases = [size for i, size in enumerate(sizes) if i == 0 or size != sizes[i - 1]]
    assert phases == [1, 2, 1], sizes
    # Each phase began by resuming right after the previous phase's last committed epoch.
    for i in range(1, epochs):
        if sizes[i] != sizes[i - 1]:
            assert starts[i] == i, (i, starts)
        else:
            assert starts[i] == starts[i - 1], (i, starts)
