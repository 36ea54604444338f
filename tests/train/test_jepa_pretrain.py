"""ECG-JEPA's smoke job on Ray: 2 workers on the PTB-XL sample, the loss falls, and export (latest and
--best) writes the EMA target encoder, not the context encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecg_ray.cli import main
from ecg_ray.train.checkpoint import latest_checkpoint, load_encoder, load_state
from tests.cli import run_json

JOB = Path(__file__).resolve().parents[2] / "jobs" / "smoke" / "jepa.yaml"


@pytest.mark.slow
def test_jepa_pretrains_on_two_workers_and_exports_its_target_encoder(ray_session, ptbxl_store, tmp_path, capsys):
    summary = run_json(capsys, "pretrain", "--config", JOB, "--store", ptbxl_store, "--output", tmp_path)
    assert summary["method"] == "jepa" and summary["epochs"] == 3
    assert summary["loss"][-1] < summary["loss"][0], summary["loss"]
    assert 0.0 <= summary["val_macro_auc"] <= 1.0  # the online probe, on the target encoder

    run_dir = Path(summary["run_dir"])
    state = load_state(latest_checkpoint(run_dir))
    model = state["model"]
    target = {k.removeprefix("target_encoder."): v for k, v in model.items() if k.startswith("target_encoder.")}
    context = {k.removeprefix("encoder."): v for k, v in model.items() if k.startswith("encoder.")}
    assert target.keys() == context.keys()
    assert any(not torch.equal(target[k], context[k]) for k in target)  # the EMA lags the context encoder

    latest, best = tmp_path / "latest.pt", tmp_path / "best.pt"
    assert main(["export", str(run_dir), "--out", str(latest)]) == 0
    assert main(["export", str(run_dir), "--best", "--out", str(best)]) == 0
    exported = torch.load(latest, weights_only=True)
    assert exported["encoder"] == "vit1d_xs" and exported["method"] == "jepa"
    assert exported["state_dict"].keys() == target.keys()
    assert all(torch.equal(exported["state_dict"][k], v) for k, v in target.items())
    best_weights = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.equal(best_weights[k], v) for k, v in state["best"]["encoder"].items())
    assert best_weights.keys() == target.keys()
    encoder = load_encoder(latest)
    assert encoder(torch.randn(2, 12, 250)).shape == (2, 192)
