"""``--resume`` on a run whose newest checkpoint does not load: the newest one that loads, nothing deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ecg_ray.train.checkpoint import (
    RAY_SNAPSHOT,
    STATE_FILE,
    CheckpointError,
    latest_checkpoint,
    prepare_resume,
    save_checkpoint,
)

NAMES = ["checkpoint_2026-01-01_00-00-00.000001", "checkpoint_2026-01-01_00-01-00.000001",
         "checkpoint_2026-01-01_00-02-00.000001"]


def _run(tmp_path: Path, tracked: int = 3) -> Path:
    """A run of three epochs, one checkpoint each, the last ``tracked`` in Ray's snapshot (Ray 2.60's layout)."""
    run = tmp_path / "run"
    for epoch, name in enumerate(NAMES):
        save_checkpoint(run / name, {"epoch": epoch, "model": {"w": torch.full((3,), float(epoch))}},
                        [{"epoch": k, "loss": 1.0 - 0.1 * k} for k in range(epoch + 1)])
    results = [{"version": 0, "checkpoint_dir_name": name, "metrics": {"epoch": k}}
               for k, name in enumerate(NAMES)][-tracked:]
    snapshot = {"ray_version": "2.60.0", "checkpoint_results": results,
                "checkpoint_report_indices": [k for k in range(3)][-tracked:],
                "latest_checkpoint_result": results[-1], "pending_training_results": [],
                "pending_validation_specs": [], "current_report_index": 3, "validated_checkpoint_dir_names": [],
                "timed_out_validation_checkpoint_dir_names": [], "failed_validation_checkpoint_dir_names": []}
    (run / RAY_SNAPSHOT).write_text(json.dumps(snapshot))
    return run


def _truncate(checkpoint: Path) -> bytes:
    state = checkpoint / STATE_FILE
    state.write_bytes(state.read_bytes()[:200])
    return state.read_bytes()


def test_a_truncated_newest_checkpoint_is_passed_over_and_kept(tmp_path):
    run = _run(tmp_path)
    truncated = _truncate(run / NAMES[2])
    original = (run / RAY_SNAPSHOT).read_text()
    point = prepare_resume(run)
    assert point.checkpoint == str(run / NAMES[1])
    assert [location for location, _ in point.skipped] == [str(run / NAMES[2])]
    assert "cannot load checkpoint" in point.skipped[0][1] and STATE_FILE in point.skipped[0][1]
    # Ray now restores the epoch-1 checkpoint and no longer tracks the bad one, so it never deletes it.
    snapshot = json.loads((run / RAY_SNAPSHOT).read_text())
    assert snapshot["latest_checkpoint_result"]["checkpoint_dir_name"] == NAMES[1]
    assert [r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]] == NAMES[:2]
    assert snapshot["checkpoint_report_indices"] == [0, 1]
    assert Path(latest_checkpoint(run)).name == NAMES[1]  # export and report follow the same choice
    # nothing is lost: the bad checkpoint's files as they were, Ray's snapshot as it was
    assert (run / NAMES[2] / STATE_FILE).read_bytes() == truncated and (run / NAMES[2] / "history.json").exists()
    assert Path(point.snapshot_backup).read_text() == original
    assert Path(point.snapshot_backup).parent == run


def test_every_newer_bad_checkpoint_is_named_until_one_loads(tmp_path):
    run = _run(tmp_path)
    _truncate(run / NAMES[2])
    (run / NAMES[1] / "history.json").write_text('[{"epoch": 0')  # a truncated history is as bad
    point = prepare_resume(run)
    assert point.checkpoint == str(run / NAMES[0])
    assert [Path(location).name for location, _ in point.skipped] == [NAMES[2], NAMES[1]]
    assert "history.json: cannot load history" in point.skipped[1][1]


def test_a_loadable_newest_checkpoint_changes_nothing(tmp_path):
    run = _run(tmp_path)
    original = (run / RAY_SNAPSHOT).read_text()
    point = prepare_resume(run)
    assert point.checkpoint == str(run / NAMES[2]) and point.skipped == [] and point.snapshot_backup is None
    assert (run / RAY_SNAPSHOT).read_text() == original
    assert sorted(p.name for p in run.iterdir()) == sorted([*NAMES, RAY_SNAPSHOT])


def test_no_loadable_checkpoint_is_refused_in_one_line_and_nothing_changes(tmp_path):
    run = _run(tmp_path, tracked=1)  # keep_checkpoints=1: Ray tracks only the newest
    _truncate(run / NAMES[2])
    original = (run / RAY_SNAPSHOT).read_text()
    with pytest.raises(CheckpointError) as caught:
        prepare_resume(run)
    message = str(caught.value)
    assert "\n" not in message and "no checkpoint of this run loads" in message and NAMES[2] in message
    assert (run / RAY_SNAPSHOT).read_text() == original
    assert sorted(p.name for p in run.iterdir()) == sorted([*NAMES, RAY_SNAPSHOT])


def test_an_unreadable_snapshot_is_refused_naming_it(tmp_path):
    run = _run(tmp_path)
    (run / RAY_SNAPSHOT).write_text('{"checkpoint_results": [')
    with pytest.raises(CheckpointError, match=f"{RAY_SNAPSHOT}: unreadable Ray Train snapshot"):
        prepare_resume(run)


def test_a_run_without_a_committed_checkpoint_starts_over(tmp_path):
    (tmp_path / "run").mkdir()
    assert prepare_resume(tmp_path / "run").checkpoint is None
