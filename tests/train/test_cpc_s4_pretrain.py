"""CPC on the cpc_s4 backbone end to end on the PTB-XL sample: 2-worker pretraining, export, linear evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecg_ray.cli import main
from tests.cli import run_json

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"


@pytest.mark.slow
def test_cpc_s4_pretrains_exports_and_evaluates(ray_session, ptbxl_store, tmp_path, capsys):
    summary = run_json(capsys, "pretrain", "--store", ptbxl_store, "--config", JOBS / "cpc-s4.yaml",
                       "--workers", 2, "--output", tmp_path / "runs")
    assert summary["method"] == "cpc" and summary["epochs"] == 3 and len(summary["loss"]) == 3
    assert summary["loss"][-1] < summary["loss"][0], summary["loss"]
    assert 0.0 <= summary["val_macro_auc"] <= 1.0  # online linear probe on the pooled 1536-d features

    encoder_file = tmp_path / "cpc_s4.pt"
    assert main(["export", summary["run_dir"], "--out", str(encoder_file)]) == 0
    payload = torch.load(encoder_file, weights_only=True)
    assert payload["encoder"] == "cpc_s4" and payload["epoch"] == 2

    # The smoke linear job names xresnet1d50; the exported file's encoder (cpc_s4) is what is built.
    evaluation = run_json(capsys, "evaluate", "--mode", "linear", "--store", ptbxl_store, "--config",
                          JOBS / "eval-linear.yaml", "--encoder", encoder_file, "--epochs", 2,
                          "--output", tmp_path / "eval")
    assert evaluation["mode"] == "linear"
    assert 0.0 <= evaluation["test_macro_auc"] <= 1.0 and evaluation["labels_scored"] > 0
