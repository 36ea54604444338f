"""A whole run against cloud storage: store, checkpoints, resume, export and evaluation on s3://.

The bucket is a moto S3 server on loopback (conftest ``s3_bucket``). This is the path a cluster
takes with ``--store s3://... --output s3://...``: Ray Train uploads checkpoints through its
storage_path, workers stream the store through zarr + obstore, the driver reads and writes run
files through pyarrow.fs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecg_ray import storage
from ecg_ray.train.checkpoint import latest_checkpoint, load_encoder_payload, load_history, load_state
from ecg_ray.train.trainer import RUN_CONFIG
from tests.cli import run_json

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"


_run = run_json


@pytest.mark.slow
def test_pretrain_resume_export_and_evaluate_entirely_on_s3(ray_session, ptbxl_dir, s3_bucket, capsys):
    store = f"{s3_bucket}/stores/ptbxl100"
    _run(capsys, "prepare", "ptbxl", ptbxl_dir, "--out", store, "--no-progress", "--workers", 2)

    first = _run(capsys, "pretrain", "--store", store, "--config", JOBS / "simclr.yaml", "--workers", 2,
                 "--epochs", 1, "--output", f"{s3_bucket}/runs")
    run_dir = first["run_dir"]
    assert run_dir.startswith(f"{s3_bucket}/runs/simclr-") and first["epochs"] == 1
    assert first["checkpoint"].startswith(run_dir + "/checkpoint_")
    assert storage.exists(storage.join(run_dir, RUN_CONFIG))
    assert load_state(first["checkpoint"])["epoch"] == 0

    # The driver is gone; a new one resumes from the cloud run directory alone.
    resumed = _run(capsys, "pretrain", "--resume", run_dir, "--epochs", 2)
    assert resumed["run_dir"] == run_dir and resumed["epochs"] == 2
    assert resumed["loss"][:1] == first["loss"]  # epoch 0 was not run again
    newest = latest_checkpoint(run_dir)
    assert [h["epoch"] for h in load_history(newest)] == [0, 1]

    encoder = f"{s3_bucket}/encoders/simclr.pt"
    exported = _run(capsys, "export", run_dir, "--out", encoder)
    assert exported["out"] == encoder and exported["epoch"] == 1
    assert load_encoder_payload(encoder)["encoder"] == "xresnet1d50"

    evaluation = _run(capsys, "evaluate", "--mode", "linear", "--encoder", encoder, "--store", store,
                      "--config", JOBS / "eval-linear.yaml", "--epochs", 1, "--workers", 1,
                      "--output", f"{s3_bucket}/evals")
    assert evaluation["run_dir"].startswith(f"{s3_bucket}/evals/eval-linear-")
    saved = json.loads(storage.read_text(storage.join(evaluation["run_dir"], "evaluation.json")))
    assert saved["test_macro_auc"] == evaluation["test_macro_auc"] and 0.0 < saved["test_macro_auc"] <= 1.0


@pytest.mark.slow
def test_sweep_writes_to_s3_and_resumes_from_it(ray_session, ptbxl_store, s3_bucket, capsys):
    output = f"{s3_bucket}/sweeps/lf"
    first = _run(capsys, "sweep", "--config", JOBS / "sweep-label-fraction.yaml", "--store", ptbxl_store,
                 "--output", output)
    assert first["sweep_dir"] == output and first["tables"]["results"] == f"{output}/results.parquet"
    results = storage.read_parquet(first["tables"]["results"])
    assert len(results) == 2 and (results["status"] == "done").all()
    assert all(r.startswith(f"{output}/trials/") for r in results["run_dir"])
    assert all(storage.exists(storage.join(r, "evaluation.json")) for r in results["run_dir"])
    assert storage.read_text(f"{output}/results.csv").startswith("trial_id,")
    # A new driver on the same URI resumes the sweep: the finished trials are kept, not re-run.
    again = _run(capsys, "sweep", "--config", JOBS / "sweep-label-fraction.yaml", "--store", ptbxl_store,
                 "--output", output)
    rerun = storage.read_parquet(again["tables"]["results"])
    assert sorted(rerun["trial_id"]) == sorted(results["trial_id"])
    assert sorted(rerun["test_macro_auc"]) == sorted(results["test_macro_auc"])
    assert [storage.name(d) for d in storage.list_dirs(f"{output}/trials")] == sorted(results["trial_id"])
