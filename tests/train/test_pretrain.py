"""2-worker pretraining on the PTB-XL sample for every method, checkpoints, --resume, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecg_ray.cli import main
from ecg_ray.train.checkpoint import latest_checkpoint, load_history, load_state
from tests.cli import run_json

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"


def _pretrain(capsys, *args) -> dict:
    return run_json(capsys, "pretrain", *args)


def _methods_with_smoke_jobs() -> list[str]:
    """Every registered method that has its smoke job (jobs/smoke/<name>.yaml)."""
    from ecg_ray.methods import methods

    return [name for name in methods() if (JOBS / f"{name}.yaml").exists()]


@pytest.mark.slow
@pytest.mark.parametrize("method", _methods_with_smoke_jobs())
def test_two_worker_pretraining_loss_falls(method, ray_session, ptbxl_store, tmp_path, capsys):
    summary = _pretrain(capsys, "--method", method, "--store", ptbxl_store, "--config", JOBS / f"{method}.yaml",
                        "--workers", 2, "--output", tmp_path)
    assert summary["method"] == method and summary["epochs"] == 3 and len(summary["loss"]) == 3
    assert summary["loss"][-1] < summary["loss"][0], summary["loss"]
    assert summary["samples_per_s"] > 0
    assert 0.0 <= summary["val_macro_auc"] <= 1.0  # online linear probe on fold 9
    checkpoint = Path(summary["checkpoint"])
    assert checkpoint.is_dir() and Path(summary["run_dir"]) in checkpoint.parents
    state = load_state(checkpoint)
    assert state["epoch"] == 2 and state["config"]["method"]["name"] == method


@pytest.mark.slow
def test_resume_continues_at_next_epoch_with_optimizer_state(ray_session, ptbxl_store, tmp_path, capsys):
    first = _pretrain(capsys, "--store", ptbxl_store, "--config", JOBS / "simclr.yaml", "--workers", 2,
                      "--epochs", 2, "--output", tmp_path)
    run_dir = Path(first["run_dir"])
    before = load_state(latest_checkpoint(run_dir))
    steps = first["loss"] and load_history(latest_checkpoint(run_dir))[-1]["steps"]
    resumed = _pretrain(capsys, "--resume", run_dir, "--epochs", 3)
    assert resumed["run_dir"] == str(run_dir) and resumed["epochs"] == 3
    assert resumed["loss"][:2] == first["loss"]  # the first two epochs were not run again
    after = load_state(latest_checkpoint(run_dir))
    assert after["epoch"] == 2
    # Adam's step counter continued from the saved optimizer state instead of restarting
    step_before = next(iter(before["optimizer"]["state"].values()))["step"]
    step_after = next(iter(after["optimizer"]["state"].values()))["step"]
    assert float(step_before) == steps and float(step_after) == steps * 3 / 2

    out = tmp_path / "encoder.pt"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    payload = torch.load(out, weights_only=True)
    assert payload["encoder"] == "xresnet1d50" and payload["epoch"] == 2
    from ecg_ray.models import build_encoder

    encoder = build_encoder(payload["encoder"])
    encoder.load_state_dict(payload["state_dict"])
    assert encoder(torch.randn(2, 12, 250)).shape == (2, 512)


def test_new_run_never_reuses_a_directory(tmp_path):
    from ecg_ray.train.trainer import new_run_dir

    first = new_run_dir(tmp_path, "simclr")
    Path(first).mkdir(parents=True)
    assert new_run_dir(tmp_path, "simclr") != first


def test_new_run_on_s3_never_reuses_a_run(s3_bucket):
    from ecg_ray import storage
    from ecg_ray.train.trainer import new_run_dir

    first = new_run_dir(f"{s3_bucket}/runs/", "simclr")
    assert first.startswith(f"{s3_bucket}/runs/simclr-")
    storage.write_text("{}", storage.join(first, "ecg_ray_config.yaml"))
    assert new_run_dir(f"{s3_bucket}/runs", "simclr") not in (first,)


@pytest.mark.parametrize("args,message", [
    (["--set", "optim.lrr=1"], "optim.lrr"),
    (["--set", "method.name=moco"], "method.name"),
    (["--set", "train.batch_size=65"], "train.batch_size"),
    (["--set", "train.batch_size=4096"], "train.batch_size"),
    (["--set", "model.encoder=resnet9"], "model.encoder"),
    (["--set", "byol.tau_base=0.9"], "byol"),
])
def test_bad_config_fails_before_ray_starts(args, message, ptbxl_store, tmp_path, capsys):
    code = main(["pretrain", "--store", str(ptbxl_store), "--config", str(JOBS / "simclr.yaml"), "--workers", "2",
                 "--output", str(tmp_path), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_resume_of_a_non_run_is_refused(tmp_path, capsys):
    assert main(["pretrain", "--resume", str(tmp_path)]) == 2
    assert "not an ecg_ray run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_validation_every_n_epochs_and_the_wall_time_split(ray_session, ptbxl_store, tmp_path, capsys):
    """train.probe_every=2 over 4 epochs validates at epochs 0 (first), 1, 3 (last); epoch 2 carries epoch 1's."""
    summary = _pretrain(capsys, "--store", ptbxl_store, "--config", JOBS / "simclr.yaml", "--workers", 1,
                        "--epochs", 4, "--output", tmp_path, "--set", "train.probe_every=2",
                        "--set", "train.max_steps_per_epoch=2")
    history = load_history(summary["checkpoint"])
    assert [h["val_epoch"] for h in history] == [0, 1, 1, 3]
    assert history[2]["val_macro_auc"] == history[1]["val_macro_auc"]
    for h in history:
        assert h["train_s"] > 0 and h["probe_s"] >= 0 and h["epoch_s"] >= h["train_s"] + h["probe_s"] - 1e-3
    # a carried epoch spends (almost) nothing on validation; checkpoint_s reports the previous epoch's checkpoint
    assert history[2]["probe_s"] < 0.1 * min(history[1]["probe_s"], history[3]["probe_s"])
    assert history[0]["checkpoint_s"] == 0 and all(h["checkpoint_s"] > 0 for h in history[1:])
