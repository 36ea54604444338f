"""Elastic pretraining on a local multi-node cluster that grows and shrinks mid-run.

Run by tests/train/test_elastic.py in its own process (it starts its own Ray cluster with
``ray.cluster_utils.Cluster``, separate from the test session's Ray). Usage::

    python tests/train/elastic_cluster.py STORE OUTPUT [--shrink]

The head offers room for one training worker; once the run has committed a checkpoint a second
node joins (room for a second worker); with --shrink that node is removed again once two workers
have committed a checkpoint, as when a spot node is reclaimed. Prints one JSON line: the run
summary and the per-epoch world sizes from the final checkpoint's history.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"


def _history(run_dir: str) -> list[dict]:
    from ecg_ray.train.checkpoint import CheckpointError, latest_checkpoint, load_history

    try:
        return load_history(latest_checkpoint(run_dir))
    except CheckpointError:
        return []


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


def main(store: str, output: str, shrink: bool, epochs: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from ecg_ray.config import load_config
    from ecg_ray.train.pretrain import pretrain_worker
    from ecg_ray.train.trainer import fit, new_run_dir, validate_pretraining

    # Logical CPUs: the head has 3 (one 2-CPU training worker + one for Ray Data read tasks).
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "object_store_memory": 300_000_000,
                                                            "include_dashboard": False})
    ray.init(address=cluster.address, log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    config = load_config(JOBS / "simclr.yaml", [
        f"data.store={store}", "train.workers=1", "train.max_workers=2", "train.cpus_per_worker=2",
        "train.resize_check_s=1", f"train.epochs={epochs}", "train.max_steps_per_epoch=2", "train.batch_size=32",
        "train.probe=false", "train.max_failures=3", "train.keep_checkpoints=2", "train.torch_threads=1",
        "data.train_folds=null", "data.val_folds=null"])
    validate_pretraining(config)
    run_dir = new_run_dir(output, "simclr")
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = fit(config, run_dir, pretrain_worker)
        except BaseException as exc:  # reported to the parent as JSON
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run)
    thread.start()
    events = []
    try:
        _wait(lambda: len(_history(run_dir)) >= 1 or not thread.is_alive(), 300, "the first checkpoint")
        node = cluster.add_node(num_cpus=2, object_store_memory=200_000_000)
        events.append({"event": "node_added", "after_epochs": len(_history(run_dir))})
        if shrink:
            _wait(lambda: any(h["world_size"] == 2 for h in _history(run_dir)) or not thread.is_alive(), 300,
                  "an epoch on two workers")
            cluster.remove_node(node)
            events.append({"event": "node_removed", "after_epochs": len(_history(run_dir))})
        thread.join(timeout=600)
    finally:
        history = _history(run_dir)
        ray.shutdown()
        cluster.shutdown()
    return {"run_dir": run_dir, "events": events, **outcome,
            "epochs": [h["epoch"] for h in history], "world_size": [h["world_size"] for h in history],
            "start_epoch": [h["start_epoch"] for h in history]}


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    epochs = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--epochs=")), 8)
    print(json.dumps(main(args[0], args[1], "--shrink" in sys.argv, epochs), default=str))
