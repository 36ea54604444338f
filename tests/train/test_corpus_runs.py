"""Pretraining runs on corpora: records too short for the crop, several stores mixed by weight."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.data.sources.base import Record
from ecg_ray.data.store import EcgStore
from ecg_ray.data.store_writer import StoreWriter
from ecg_ray.train.checkpoint import latest_checkpoint, load_history
from tests.cli import run_json
from tests.data.synthetic_stores import grouped_store


@pytest.fixture(scope="module")
def mostly_long_store(ptbxl_store, tmp_path_factory):
    """30 real PTB-XL records: every third exactly 10 s, the others 11.5-15 s (a record joined to
    the start of the next one, real ECG throughout)."""
    base = EcgStore(ptbxl_store)
    out = tmp_path_factory.mktemp("long") / "store"
    writer = StoreWriter(out, fs=base.fs)
    rng = np.random.default_rng(0)
    for i in range(30):
        signal = base.signal(i)
        if i % 3:
            signal = np.concatenate([signal, base.signal(i + 30)[:int(rng.integers(150, 500))]])
        row = base.records.iloc[i]
        writer.add(Record(id=str(row["id"]), dataset="ptbxl", file=str(row["file"]), signal=signal, fs=base.fs,
                          fs_original=base.fs, labels=[], metadata={"patient_id": str(row["patient_id"])}))
    writer.finalize(sources=[{"kind": "test"}], label_names=None)
    return out


@pytest.mark.slow
def test_cpc_11s_crops_leave_10s_records_out_before_planning(ray_session, mostly_long_store, tmp_path, capsys):
    # 20 records of >= 11 s over 2 workers, batch 2 per worker: 5 steps per epoch, every one delivered.
    summary = run_json(capsys, "pretrain", "--method", "cpc", "--store", mostly_long_store, "--workers", 2,
                       "--epochs", 2, "--output", tmp_path,
                       "--set", "model.encoder=cpc_4fc2lstm", "--set", "data.crop=1100",
                       "--set", "data.train_folds=null", "--set", "data.val_folds=null",
                       "--set", "train.batch_size=4", "--set", "cpc.prediction_steps=2",
                       "--set", "cpc.num_negatives=8", "--set", "optim.warmup_epochs=0")
    assert summary["epochs"] == 2 and summary["records"] == 20
    short = summary["too_short"]
    assert short["count"] == 10 and short["min_samples"] == 1100 and short["min_seconds"] == 11.0
    assert short["first_ids"] == [str(i + 1) for i in range(0, 30, 3)]  # PTB-XL ids of every third record
    history = load_history(latest_checkpoint(summary["run_dir"]))
    assert [h["steps"] for h in history] == [5, 10]
    assert history[-1]["too_short"]["count"] == 10


@pytest.mark.slow
def test_pretraining_on_two_stores_mixed_by_weight(ray_session, tmp_path, capsys):
    big = grouped_store(tmp_path / "big", {"BIG": 400}, length=300, dataset="big")
    small = grouped_store(tmp_path / "small", {"SMALL": 100}, length=300, dataset="small")
    summary = run_json(capsys, "pretrain", "--method", "simclr", "--store", big, "--store", small,
                       "--store-weights", "1,1", "--workers", 2, "--epochs", 2, "--output", tmp_path / "runs",
                       "--set", "data.train_folds=null", "--set", "data.val_folds=null",
                       "--set", "train.batch_size=32", "--set", "train.max_steps_per_epoch=2")
    assert summary["records_per_store"] == {str(big): 250, str(small): 250}
    history = load_history(latest_checkpoint(summary["run_dir"]))
    assert all(h["records_per_store"] == {str(big): 250, str(small): 250} for h in history)
    assert summary["too_short"]["count"] == 0
