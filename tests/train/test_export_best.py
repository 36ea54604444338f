"""``ecg-ray export RUN --best``: the encoder of the epoch with the best validation metric."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecg_ray.cli import main
from ecg_ray.train.checkpoint import latest_checkpoint, load_history, load_state
from tests.cli import run_json

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"


@pytest.mark.slow
@pytest.mark.parametrize("probe", [True, False])
def test_export_best_picks_the_best_validation_epoch(probe, ray_session, ptbxl_store, tmp_path, capsys):
    # CPC with a large lr moves the weights a lot between epochs, so epochs are told apart.
    summary = run_json(capsys, "pretrain", "--store", ptbxl_store, "--config", JOBS / "cpc.yaml", "--epochs", 4,
                       "--workers", 1, "--output", tmp_path, "--set", "train.keep_checkpoints=4",
                       "--set", f"train.probe={str(probe).lower()}", "--set", "optim.lr=0.003")
    run_dir = Path(summary["run_dir"])
    checkpoints = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert len(checkpoints) == 4
    history = load_history(latest_checkpoint(run_dir))
    metric = "val_macro_auc" if probe else "val_loss"
    values = [h[metric] for h in history]
    best_epoch = (max if probe else min)(range(len(values)), key=values.__getitem__)

    best = run_json(capsys, "export", run_dir, "--out", tmp_path / "best.pt", "--best")
    assert (best["epoch"], best["selected_by"]) == (best_epoch, metric)
    assert best["selected_value"] == pytest.approx(values[best_epoch])
    payload = torch.load(tmp_path / "best.pt", weights_only=True)
    assert payload["selection"] == {"metric": metric, "value": pytest.approx(values[best_epoch])}
    # the exported weights are that epoch's encoder, as its own checkpoint holds it
    state = next(load_state(c) for c in checkpoints if load_state(c)["epoch"] == best_epoch)
    for name, tensor in payload["state_dict"].items():
        assert torch.equal(tensor, state["model"][f"encoder.{name}"]), name

    latest = run_json(capsys, "export", run_dir, "--out", tmp_path / "latest.pt")
    assert (latest["epoch"], latest["selected_by"]) == (3, "latest")


def test_export_best_without_a_recorded_best_is_refused(tmp_path, capsys):
    from ecg_ray.train.checkpoint import save_checkpoint

    run = tmp_path / "run"
    checkpoint = run / "checkpoint_000000"
    checkpoint.mkdir(parents=True)
    save_checkpoint(checkpoint, {"model": {"encoder.w": torch.zeros(2)}, "epoch": 0,
                                 "config": {"model": {"encoder": "xresnet1d50"}, "method": {"name": "simclr"},
                                            "data": {"crop": 250}}}, [])
    assert main(["export", str(run), "--out", str(tmp_path / "e.pt"), "--best"]) == 2
    assert "no best epoch recorded" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(tmp_path / "e.pt")]) == 0
