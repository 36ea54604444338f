"""Fault tolerance: a worker killed with SIGKILL mid-run restarts from the last checkpoint; bad checkpoints."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from ecg_ray.cli import main
from ecg_ray.train.checkpoint import (
    ENCODER_FORMAT,
    CheckpointError,
    latest_checkpoint,
    load_encoder,
    load_history,
    load_state,
)

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"


def _train_worker_pids() -> list[int]:
    """PIDs of this session's live Ray Train workers (Ray titles them ``ray::RayTrainWorker...``).

    Read from /proc rather than the State API, which needs the dashboard the test session runs without;
    only children of this session's raylet count, so another Ray instance on the machine is never hit.
    """
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if title.startswith(b"ray::RayTrainWorker") and parent == raylet:
                pids.append(int(entry.name))
    return sorted(pids)


@pytest.mark.slow
def test_sigkilled_worker_restarts_from_last_checkpoint(ray_session, ptbxl_store, tmp_path, capsys):
    result: dict = {}

    def run():
        result["code"] = main(["pretrain", "--config", str(JOBS / "simclr.yaml"), "--store", str(ptbxl_store),
                               "--workers", "2", "--epochs", "4", "--set", "train.max_failures=2",
                               "--set", "train.probe=false", "--output", str(tmp_path), "--json"])

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 240
    killed = None
    while time.time() < deadline and thread.is_alive():
        # Ray Train records a checkpoint as committed in this snapshot; a checkpoint directory alone
        # may not be registered yet (a kill then correctly restarts from scratch).
        registered = list(tmp_path.glob("*/checkpoint_manager_snapshot.json"))
        pids = _train_worker_pids()
        if registered and pids:  # epoch 0 is checkpointed: kill a worker during epoch 1
            killed = pids[-1]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.5)
    thread.join(timeout=400)
    assert killed is not None, "no training worker to kill"
    assert not thread.is_alive() and result.get("code") == 0, capsys.readouterr().err[-3000:]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 4
    history = load_history(latest_checkpoint(Path(summary["run_dir"])))
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]  # each epoch once: none repeated
    restarts = {h["start_epoch"] for h in history}
    assert len(restarts) == 2 and min(restarts) == 0  # one restart, from a checkpoint after epoch 0
    resumed = max(restarts)
    assert all(h["start_epoch"] == (0 if h["epoch"] < resumed else resumed) for h in history)


def test_corrupt_and_foreign_checkpoints_give_clear_errors(tmp_path):
    run = tmp_path / "run"
    checkpoint = run / "checkpoint_x"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_state(checkpoint)
    torch.save({"weights": torch.zeros(2)}, checkpoint / "state.pt")
    with pytest.raises(CheckpointError, match="not an ecg_ray checkpoint"):
        load_state(checkpoint)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        latest_checkpoint(tmp_path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something else"}, foreign)
    with pytest.raises(CheckpointError, match="not an ecg_ray encoder"):
        load_encoder(foreign)
    # A pickled object (not weights) is refused by weights_only loading rather than executed.
    torch.save({"format": ENCODER_FORMAT, "obj": threading.Lock}, foreign)
    with pytest.raises(CheckpointError, match="not an ecg_ray encoder .a torch file holding Python objects"):
        load_encoder(foreign)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous file intact and loadable."""
    from ecg_ray.train import checkpoint as ckpt

    ckpt.save_checkpoint(tmp_path, {"epoch": 1, "model": {}}, [{"epoch": 1}])
    original = torch.save

    def crash(obj, path, *a, **k):
        original(obj, path, *a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, {"epoch": 2, "model": {}}, [{"epoch": 2}])
    monkeypatch.setattr(ckpt.torch, "save", original)
    assert load_state(tmp_path)["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_latest_checkpoint_is_the_one_ray_committed(tmp_path):
    """An uncommitted checkpoint left by an interrupted worker group (longer history) is not picked."""
    import json

    from ecg_ray.train.checkpoint import RAY_SNAPSHOT, save_checkpoint

    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint_a", {"epoch": 1}, [{"epoch": 0}, {"epoch": 1}])
    save_checkpoint(run / "checkpoint_b", {"epoch": 2}, [{"epoch": 0}, {"epoch": 1}, {"epoch": 2}])
    assert Path(latest_checkpoint(run)).name == "checkpoint_b"  # no snapshot: the longest history
    (run / RAY_SNAPSHOT).write_text(json.dumps({"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_a"}}))
    assert Path(latest_checkpoint(run)).name == "checkpoint_a"
    (run / RAY_SNAPSHOT).write_text("{not json")  # unreadable snapshot: fall back, do not fail
    assert Path(latest_checkpoint(run)).name == "checkpoint_b"


def test_ray_checkpoint_on_s3_is_read_in_place(s3_bucket):
    """Restores read a cloud checkpoint through its filesystem, with the same checks as local ones."""
    from ray.train import Checkpoint

    from ecg_ray import storage
    from ecg_ray.train.checkpoint import read_ray_checkpoint, save_checkpoint

    location = f"{s3_bucket}/runs/r/checkpoint_000001"
    save_checkpoint(location, {"epoch": 3, "model": {"w": torch.ones(2)}}, [{"epoch": 3}])
    fs, path = storage.filesystem(location)
    state, history = read_ray_checkpoint(Checkpoint(path=path, filesystem=fs))
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.ones(2)) and history == [{"epoch": 3}]
    storage.write_bytes(b"garbage", storage.join(location, "state.pt"))
    with pytest.raises(CheckpointError, match="state.pt: cannot load checkpoint"):
        read_ray_checkpoint(Checkpoint(path=path, filesystem=fs))
