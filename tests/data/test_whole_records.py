"""data.window: 0 (whole records): batching by length, scores equal to one record at a time, the
noise and lead-subset paths, the checks, and one `ecg-ray evaluate` run with both settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ecg_ray.config import load_config
from ecg_ray.data.leads import kept_leads, zero_missing_leads
from ecg_ray.data.records import read_records
from ecg_ray.data.sources.base import Record
from ecg_ray.data.store import EcgStore
from ecg_ray.data.store_writer import StoreWriter
from ecg_ray.data.windows import stack_whole_records, whole_record_batches
from ecg_ray.errors import ConfigError
from ecg_ray.evaluation.noise import add_noise, record_power
from ecg_ray.train.downstream import (
    check_evaluation_data,
    check_pretraining_data,
    predict_whole_records,
    restrict_leads,
    variant_name,
)
from tests.cli import run_json

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"
LENGTHS = [300, 420, 300, 200, 510, 300, 420, 250]


def test_batches_group_by_length_within_a_sample_budget():
    indices = np.arange(len(LENGTHS)) * 3 + 1
    batches = whole_record_batches(indices, np.array(LENGTHS), max_samples=650)
    assert sorted(np.concatenate(batches).tolist()) == sorted(indices.tolist())
    length_of = dict(zip(indices.tolist(), LENGTHS, strict=True))
    for batch in batches:
        lengths = {length_of[int(i)] for i in batch}
        assert len(lengths) == 1
        assert len(batch) <= max(1, 650 // lengths.pop())
    # shortest length first, store order within a length
    assert [b.tolist() for b in batches] == [[10], [22], [1, 7], [16], [4], [19], [13]]


def test_stack_whole_records():
    records = [np.full((7, 12), k, dtype=np.float32) + np.arange(12) for k in range(3)]
    windows = stack_whole_records(records, np.array([5, 8, 9]))
    assert windows.signal.shape == (3, 12, 7) and windows.signal.flags.c_contiguous
    assert np.array_equal(windows.signal[1, 4], np.full(7, 5.0))
    assert windows.record_index.tolist() == [5, 8, 9] and windows.window_index.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="one length"):
        stack_whole_records([np.zeros((7, 12)), np.zeros((8, 12))], np.array([0, 1]))


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory) -> EcgStore:
    rng = np.random.default_rng(5)
    out = tmp_path_factory.mktemp("mixed") / "store"
    writer = StoreWriter(out, fs=100.0)
    for i, n in enumerate(LENGTHS):
        writer.add(Record(id=f"m{i}", dataset="synthetic", file=f"synthetic/{i}",
                          signal=rng.standard_normal((n, 12)).astype(np.float32), fs=100.0, fs_original=100.0,
                          labels=["A"], metadata={"fold": 1}))
    writer.finalize(sources=[{"kind": "synthetic-lengths"}], label_names=None)
    return EcgStore(out)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(12, 4, 5), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))


def one_at_a_time(model, store, indices, noise=None) -> dict[int, np.ndarray]:
    out = {}
    for i, signal in zip(indices, read_records(store, indices), strict=True):
        x = signal.T[None].astype(np.float32)
        if noise is not None:
            x = add_noise(x, np.array([i]), {int(i): record_power(signal)}, *noise, fs=100.0, seed=0,
                          window_ordinal=np.zeros(1, dtype=np.int64))
        with torch.no_grad():
            out[int(i)] = torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x)))).numpy()[0]
    return out


@pytest.mark.parametrize("noise", [None, ("all", 6.0)])
def test_whole_record_scores_equal_one_record_at_a_time(mixed_store, noise):
    model = tiny_model()
    indices = np.array([6, 0, 3, 1, 4, 2, 7, 5])
    settings = {"noise": noise, "noise_seed": 0} if noise else {}
    records, probs = predict_whole_records(model, mixed_store, indices, min_length=250, device="cpu",
                                           batch_samples=700, **settings)
    assert records.tolist() == [0, 1, 2, 4, 5, 6, 7]  # record 3 (200 samples) is shorter than the crop
    expected = one_at_a_time(model, mixed_store, records, noise)
    assert np.allclose(probs, np.stack([expected[int(i)] for i in records]), atol=1e-6, rtol=0)
    if noise:
        clean = predict_whole_records(model, mixed_store, indices, min_length=250, device="cpu")[1]
        assert not np.allclose(clean, probs)


def test_whole_records_with_a_lead_subset(mixed_store):
    model = tiny_model()
    indices = np.arange(len(LENGTHS))
    _, plain = predict_whole_records(model, mixed_store, indices, min_length=1, device="cpu")
    restricted = restrict_leads(tiny_model(), ["II", "V5"])
    records, probs = predict_whole_records(restricted, mixed_store, indices, min_length=1, device="cpu")
    reference = tiny_model()
    expected = []
    for signal in read_records(mixed_store, records):
        x = zero_missing_leads(signal.T[None], kept_leads(["II", "V5"]))
        with torch.no_grad():
            expected.append(torch.sigmoid(reference(torch.from_numpy(np.ascontiguousarray(x)))).numpy()[0])
    assert np.allclose(probs, np.stack(expected), atol=1e-6, rtol=0)
    assert not np.allclose(probs, plain)


def test_too_short_everywhere_is_a_config_error(mixed_store):
    with pytest.raises(ConfigError, match="no record of at least 1000 samples"):
        predict_whole_records(tiny_model(), mixed_store, np.arange(4), min_length=1000, device="cpu")


def test_checks_and_variant_names(monkeypatch):
    from ecg_ray.models.xresnet1d import XResNet1d

    whole = load_config(overrides=["data.window=0", "data.leads=[V1, i]", "eval.mode=linear"])
    check_evaluation_data(whole)
    assert variant_name(whole) == "random init linear (leads I,V1; whole records)"
    assert variant_name(load_config(overrides=["eval.mode=supervised"])) == "supervised xresnet1d50"
    assert variant_name(load_config(overrides=["data.window=0", "eval.variant=mine"])) == "mine"
    monkeypatch.setattr(XResNet1d, "accepts_any_length", False, raising=False)
    with pytest.raises(ConfigError, match="encoder xresnet1d50 does not accept inputs of any length"):
        check_evaluation_data(whole)
    with pytest.raises(ConfigError, match="data.leads .* is for ecg-ray evaluate.*RandomLeadMask"):
        check_pretraining_data(load_config(overrides=["data.leads=[I]"]))
    with pytest.raises(ConfigError, match="data.window=0 .whole records. is for ecg-ray evaluate"):
        check_pretraining_data(load_config(overrides=["data.window=0"]))


@pytest.mark.slow
def test_evaluate_on_a_lead_subset_with_whole_records(ray_session, ptbxl_store, tmp_path, capsys):
    summary = run_json(capsys, "evaluate", "--mode", "supervised", "--store", ptbxl_store,
                       "--config", JOBS / "eval-supervised.yaml", "--epochs", 1, "--output", tmp_path,
                       "--set", "data.leads=[I,II,V1]", "--set", "data.window=0",
                       "--set", "train.max_steps_per_epoch=2", "--set", "eval.bootstrap=20",
                       "--set", "noise.types=[powerline]", "--set", "noise.snr_db=[6]")
    evaluation = json.loads((Path(summary["run_dir"]) / "evaluation.json").read_text())
    assert evaluation["leads"] == ["I", "II", "V1"] and evaluation["window"] == 0 and evaluation["stride"] is None
    assert evaluation["variant"] == summary["variant"] == "supervised xresnet1d50 (leads I,II,V1; whole records)"
    store = EcgStore(ptbxl_store)
    test = store.records["fold"].to_numpy() == 10
    labelled = store.label_matrix()[test].sum(1) > 0
    assert evaluation["test_records"] == int(labelled.sum())  # every 10 s test record, one window each
    assert 0.0 <= evaluation["test_macro_auc"] <= 1.0
    assert [r["noise_type"] for r in evaluation["robustness"]] == ["powerline"]
