"""The files of a run directory and which checkpoint Ray Train committed: one torch-free definition.

Written by ``ecg_ray.train`` (pretraining and evaluation runs), read by ``ecg_ray.report``, which
must run where only the result files are (no torch, no Ray): both import the names from here.

A run directory ``OUTPUT/<method>-<time>/`` holds the saved config (:data:`RUN_CONFIG`), Ray
Train's snapshot of the checkpoints it committed (:data:`RAY_SNAPSHOT`) and ``checkpoint_*/``
directories with :data:`STATE_FILE` and :data:`HISTORY_FILE`; an evaluation writes
:data:`EVALUATION_FILE` beside its predictions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ecg_ray import storage

#: the run's config as it ran (``--resume`` reloads it)
RUN_CONFIG = "ecg_ray_config.yaml"
#: a checkpoint's model, optimizer and method state
STATE_FILE = "state.pt"
#: a checkpoint's per-epoch metrics so far
HISTORY_FILE = "history.json"
#: Ray Train's record of the checkpoints it committed (all workers reported), in the run directory
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"
#: an evaluation's metrics, intervals and settings
EVALUATION_FILE = "evaluation.json"


def committed_checkpoint_name(run_dir: str | Path) -> str | None:
    """Name of the newest checkpoint Ray Train committed, from its snapshot; None if unknown.

    A worker group interrupted between writing a checkpoint and every worker reporting it (a lost
    node, an elastic resize) leaves that directory behind uncommitted; Ray resumes from the
    committed one, so everything else that picks "the latest checkpoint" must do the same.
    """
    snapshot = storage.join(run_dir, RAY_SNAPSHOT)
    try:
        data = json.loads(storage.read_text(snapshot))
        return str(data["latest_checkpoint_result"]["checkpoint_dir_name"])
    except (storage.StorageError, ValueError, KeyError, TypeError):
        return None


def new_run_dir(output: str | Path, method: str) -> str:
    """A fresh ``OUTPUT/<method>-<timestamp>[-n]`` location (local path or URI)."""
    from ecg_ray.overwrite import check_output_dir

    check_output_dir(output)  # a file at --output: one line now, not a traceback once Ray runs
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = storage.join(output, f"{method}-{stamp}")
    suffix = 1
    while storage.exists(run_dir):
        suffix += 1
        run_dir = storage.join(output, f"{method}-{stamp}-{suffix}")
    return run_dir
