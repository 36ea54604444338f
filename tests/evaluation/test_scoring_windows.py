"""Evaluation and the noise evaluation score the windows of ecg_ray.data.windows: per-record averages of
the model's outputs on every sliding window, clean and noisy, equal to a record-by-record reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecg_ray.data.store import EcgStore
from ecg_ray.errors import ConfigError
from ecg_ray.evaluation.noise import add_noise, record_power
from ecg_ray.evaluation.scoring import predict_records
from tests.data.synthetic_stores import grouped_store


def reference_predictions(model, store, indices, window, stride, noise=None, noise_seed=0):
    """Each record on its own: its windows (start k*stride), noise drawn per (record, window k), mean sigmoid."""
    records, probs = [], []
    for i in indices:
        signal = store.signal(int(i))
        starts = range(0, len(signal) - window + 1, stride)
        x = np.stack([signal[s:s + window].T for s in starts]).astype(np.float32) if len(starts) else None
        if x is None:
            continue
        owner = np.full(len(x), int(i))
        if noise is not None:
            x = add_noise(x, owner, {int(i): record_power(signal)}, noise[0], noise[1], fs=store.fs,
                          seed=noise_seed, window_ordinal=np.arange(len(x)))
        with torch.no_grad():
            probs.append(torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x)))).mean(0).numpy())
        records.append(int(i))
    return np.array(records), np.stack(probs)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(12, 4, 25, stride=5), torch.nn.AdaptiveAvgPool1d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3))


@pytest.mark.parametrize("noise", [None, ("all", 3.0), ("powerline", 0.0)])
def test_predictions_equal_the_record_by_record_reference(ptbxl_store, model, noise):
    store = EcgStore(ptbxl_store)
    indices = np.arange(0, len(store), 7)
    # batch_windows=40: blocks of 5 records, so the per-block cutting and noise cannot hide behind one batch
    records, probs = predict_records(model, store, indices, window=250, stride=125, device="cpu", noise=noise,
                                     noise_seed=4, batch_windows=40)
    want_records, want_probs = reference_predictions(model, store, indices, 250, 125, noise, noise_seed=4)
    np.testing.assert_array_equal(records, want_records)
    np.testing.assert_allclose(probs, want_probs, rtol=1e-5, atol=1e-6)


def test_short_records_are_left_out(tmp_path, model):
    """Records shorter than the window have no window: they are not scored, the others are as the reference."""
    lengths = [100, 260, 400, 120, 1000, 250]
    store = EcgStore(grouped_store(tmp_path / "s", {"A": len(lengths)}, lengths=lengths))
    records, probs = predict_records(model, store, np.arange(6), window=250, stride=40, device="cpu",
                                     noise=("muscle_artifact", 6.0), noise_seed=1)
    want_records, want_probs = reference_predictions(model, store, np.arange(6), 250, 40, ("muscle_artifact", 6.0), 1)
    assert records.tolist() == want_records.tolist() == [1, 2, 4, 5]
    np.testing.assert_allclose(probs, want_probs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="no record of at least 500 samples"):
        predict_records(model, store, np.arange(4), window=500, stride=125, device="cpu")
