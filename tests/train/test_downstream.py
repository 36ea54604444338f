"""Linear, fine-tune and supervised evaluation on the PTB-XL sample; sweeps and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecg_ray.cli import main
from ecg_ray.data.store import EcgStore
from ecg_ray.train.checkpoint import ENCODER_FORMAT
from tests.cli import run_json

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"


_run = run_json


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory) -> Path:
    """An exported-encoder file (random weights) in the format `ecg-ray export` writes."""
    from ecg_ray.models import build_encoder

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    torch.save({"format": ENCODER_FORMAT, "encoder": "xresnet1d50",
                "state_dict": build_encoder("xresnet1d50").state_dict(), "method": "none", "epoch": 0,
                "fs": 100.0, "input_length": 250, "config": {}, "ecg_ray_version": "test"}, path)
    return path


def _scorable_test_labels(store_path) -> int:
    store = EcgStore(store_path)
    test = store.records["fold"].to_numpy() == 10
    labels = store.label_matrix()[test]
    labels = labels[labels.sum(1) > 0]
    return int(((labels.sum(0) > 0) & (labels.sum(0) < len(labels))).sum())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["linear", "finetune", "supervised"])
def test_evaluation_modes(mode, ray_session, ptbxl_store, encoder_file, tmp_path, capsys):
    args = ["evaluate", "--mode", mode, "--store", ptbxl_store, "--config", JOBS / f"eval-{mode}.yaml",
            "--epochs", 2, "--output", tmp_path]
    if mode == "finetune":
        args += ["--encoder", encoder_file]
    summary = _run(capsys, *args)
    assert summary["mode"] == mode
    assert 0.0 <= summary["test_macro_auc"] <= 1.0 and 0.0 <= summary["val_macro_auc"] <= 1.0
    low, high = summary["test_macro_auc_ci"]
    assert low <= summary["test_macro_auc"] <= high
    assert summary["labels_scored"] == _scorable_test_labels(ptbxl_store)
    assert summary["labels_scored"] + summary["labels_skipped"] == 71
    assert summary["best_epoch"] in (0, 1)
    evaluation = json.loads((Path(summary["run_dir"]) / "evaluation.json").read_text())
    scored = [v for v in evaluation["per_label_auc"].values() if v is not None]
    assert len(scored) == summary["labels_scored"]
    assert np.mean(scored) == pytest.approx(summary["test_macro_auc"])


def test_supervised_with_encoder_is_refused(ptbxl_store, encoder_file, tmp_path, capsys):
    code = main(["evaluate", "--mode", "supervised", "--store", str(ptbxl_store), "--encoder", str(encoder_file),
                 "--config", str(JOBS / "eval-supervised.yaml"), "--output", str(tmp_path)])
    assert code == 2 and "random initialisation" in capsys.readouterr().err


@pytest.mark.slow
def test_label_fraction_sweep_snr_sweep_and_report(ray_session, ptbxl_store, tmp_path, capsys):
    lf = _run(capsys, "sweep", "--config", JOBS / "sweep-label-fraction.yaml", "--store", ptbxl_store,
              "--output", tmp_path / "lf")
    results = pd.read_parquet(lf["tables"]["results"])
    assert len(results) == 2 and sorted(results["data.label_fraction"]) == [0.1, 1.0]
    assert (results["status"] == "done").all()
    assert results["test_macro_auc"].between(0, 1).all()
    assert (tmp_path / "lf" / "results.csv").exists()
    # Running the same sweep on the same directory resumes it: finished trials are kept, not re-run.
    again = _run(capsys, "sweep", "--config", JOBS / "sweep-label-fraction.yaml", "--store", ptbxl_store,
                 "--output", tmp_path / "lf")
    rerun = pd.read_parquet(again["tables"]["results"])
    assert sorted(rerun["trial_id"]) == sorted(results["trial_id"])
    assert sorted(rerun["test_macro_auc"]) == sorted(results["test_macro_auc"])
    assert sorted(p.name for p in (tmp_path / "lf" / "trials").iterdir()) == sorted(results["trial_id"])

    snr = _run(capsys, "sweep", "--config", JOBS / "sweep-snr.yaml", "--store", ptbxl_store,
               "--output", tmp_path / "snr")
    noise = pd.read_parquet(snr["tables"]["robustness"])
    assert len(noise) == 2 * 2 + 1  # 2 types x 2 SNRs + the clean reference
    assert set(noise["noise_type"]) == {"baseline_wander", "all", "none"}
    assert set(noise.loc[noise["noise_type"] != "none", "snr_db"]) == {12.0, 0.0}

    report = _run(capsys, "report", tmp_path)
    text = Path(report["report"]).read_text()
    assert "supervised" in text
    pngs = list(Path(report["report"]).parent.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
