"""Tiny Ray runs that fail or go wrong: a NaN loss in a worker, a truncated checkpoint on --resume, collapse.

One worker, a 120-record synthetic store, 4 steps of 16 crops per epoch: each run takes well under a
minute on two CPU cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ecg_ray.cli import main
from ecg_ray.train.checkpoint import RAY_SNAPSHOT, STATE_FILE, latest_checkpoint, load_history
from ecg_ray.train.failures import ERROR_LOG, WARNINGS_LOG
from tests.cli import run_json

TINY = ["--method", "simclr", "--workers", "1", "--set", "train.batch_size=16",
        "--set", "train.max_steps_per_epoch=4", "--set", "train.probe=false", "--set", "data.val_folds=null",
        "--set", "simclr.projection_dim=16", "--set", "optim.warmup_epochs=0", "--set", "train.torch_threads=1"]


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("failures") / "synthetic"
    assert main(["prepare", "synthetic", "--records", "120", "--out", str(out), "--no-progress"]) == 0
    return out


def _run_dirs(output: Path) -> list[Path]:
    return [p for p in output.iterdir() if p.is_dir()]


def _warnings(caplog) -> str:
    """The driver's warning lines (on stderr in the CLI; pytest's log capture takes them here)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")


@pytest.mark.slow
def test_a_nan_loss_in_a_worker_exits_with_one_line_naming_the_epoch(ray_session, synthetic_store, tmp_path,
                                                                      capsys):
    code = main(["pretrain", "--store", str(synthetic_store), *TINY, "--epochs", "1", "--output", str(tmp_path),
                 "--set", "optim.lr=1.0e+30"])  # weights of 1e30 overflow to inf within two steps: NaN loss
    err = capsys.readouterr().err
    assert code == 2
    [run_dir] = _run_dirs(tmp_path)
    assert err.splitlines() == [f"ecg-ray pretrain: error: the mean loss of epoch 0 is nan: training diverged; "
                                f"lower optim.lr (or use train.precision=fp32) (worker 0; full traceback in "
                                f"{run_dir / ERROR_LOG})"]
    log = (run_dir / ERROR_LOG).read_text()
    assert "Traceback (most recent call last)" in log and "WorkerGroupError" in log
    assert "in check_epoch_loss" in log and "TrainingDivergedError" in log  # the worker's own frames


@pytest.mark.slow
def test_resume_falls_back_from_a_truncated_checkpoint_and_keeps_it(ray_session, synthetic_store, tmp_path,
                                                                     capsys, caplog):
    first = run_json(capsys, "pretrain", "--store", synthetic_store, *TINY, "--epochs", 2, "--output", tmp_path,
                     "--set", "optim.lr=0.003")
    # A sane run is not called collapsed: its embeddings keep their spread, its loss falls below uniform.
    assert first["collapse"]["collapsed"] is False, first["collapse"]
    assert first["collapse"]["embedding_std"] > first["collapse"]["embedding_std_threshold"]
    run_dir = Path(first["run_dir"])
    newest = Path(latest_checkpoint(run_dir))
    state = newest / STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a copy cut short
    truncated = state.read_bytes()

    # Three more epochs: Ray registers three new checkpoints, more than train.keep_checkpoints=2.
    resumed = run_json(capsys, "pretrain", "--resume", run_dir, "--epochs", 4)
    err = _warnings(caplog)
    assert resumed["epochs"] == 4
    history = load_history(latest_checkpoint(run_dir))
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert [h["start_epoch"] for h in history] == [0, 1, 1, 1]  # epoch 1 ran again from epoch 0's checkpoint
    assert history[0]["loss"] == first["loss"][0]
    # said on stderr and in the run's log, naming the bad checkpoint and the one used
    warning = f"{newest} does not load"
    assert warning in err and "resuming from" in err and "after epoch 0" in err
    assert warning in (run_dir / WARNINGS_LOG).read_text()
    # never deleted, not even by Ray's num_to_keep after the new checkpoints
    assert state.read_bytes() == truncated
    assert newest.name not in (run_dir / RAY_SNAPSHOT).read_text()
    assert list(run_dir.glob(f"{RAY_SNAPSHOT}.before-resume-*"))


@pytest.mark.slow
def test_a_collapsed_run_is_flagged_in_the_summary_and_the_log(ray_session, synthetic_store, tmp_path, capsys,
                                                               caplog):
    # optim.lr=1e6: the projections become identical within a step or two, NT-Xent sits at ln(2N - 1).
    summary = run_json(capsys, "pretrain", "--store", synthetic_store, *TINY, "--epochs", 2, "--output", tmp_path,
                       "--set", "optim.lr=1000000.0")
    err = _warnings(caplog)
    verdict = summary["collapse"]
    assert verdict["collapsed"] is True
    assert verdict["embedding_std"] < verdict["embedding_std_threshold"] == pytest.approx(0.1 / 16 ** 0.5)
    assert verdict["loss_uniform"] == pytest.approx(math.log(2 * 16 - 1))
    assert verdict["loss_uniform_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert "embedding std" in verdict["reason"] and "uniform-similarity value 3.4340" in verdict["reason"]
    run_dir = Path(summary["run_dir"])
    assert f"{run_dir}: the representation has collapsed" in err
    assert "has collapsed" in (run_dir / WARNINGS_LOG).read_text()
    epoch = load_history(latest_checkpoint(run_dir))[-1]
    assert {"embedding_std", "embedding_dim", "loss_uniform", "loss_uniform_ratio"} <= set(epoch)
