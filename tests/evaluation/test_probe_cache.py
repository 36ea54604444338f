"""The online probe reads its windows once per run, and they are the windows it used to read each epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecg_ray.data.cutting import cut
from ecg_ray.data.store import EcgStore
from ecg_ray.evaluation import probe
from tests.data.synthetic_stores import grouped_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return EcgStore(grouped_store(tmp_path_factory.mktemp("probe") / "s", {"A": 300, "B": 300}, length=400))


def reference_windows(store, train_idx, val_idx, window, stride, max_records, seed):
    """The probe's windows as it built them before the cache: record by record, same draws."""
    rng = np.random.default_rng(seed)
    if len(train_idx) > max_records:
        train_idx = np.sort(rng.choice(train_idx, max_records, replace=False))
    if len(val_idx) > max_records:
        val_idx = np.sort(rng.choice(val_idx, max_records, replace=False))
    out = []
    for indices, random_crop in ((train_idx, True), (val_idx, False)):
        xs, owners = [], []
        for i in indices:
            record = store.signal(int(i))
            starts = (rng.integers(0, len(record) - window + 1, size=1) if random_crop
                      else np.arange(0, len(record) - window + 1, stride))
            xs.append(cut(record, starts, window))
            owners.append(np.full(len(starts), i))
        out += [np.concatenate(xs), np.concatenate(owners)]
    return out


def test_windows_equal_the_record_by_record_reference(store):
    train_idx, val_idx = np.arange(0, 600, 2), np.arange(1, 600, 2)
    got = probe.probe_windows(store, train_idx, val_idx, window=250, stride=125, max_records=200, seed=3)
    want = reference_windows(store, train_idx, val_idx, 250, 125, 200, 3)
    for a, b in zip((got.x_train, got.own_train, got.x_val, got.own_val), want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_second_probe_reads_nothing_and_scores_the_same(store, monkeypatch):
    reads = []
    real = probe.read_records
    monkeypatch.setattr(probe, "read_records", lambda s, idx: reads.append(len(idx)) or real(s, idx))
    probe._CACHE.clear()
    encoder = torch.nn.Sequential(torch.nn.Conv1d(12, 4, 5), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    train_idx, val_idx = np.arange(0, 600, 2), np.arange(1, 600, 2)
    first = probe.linear_probe_auc(encoder, store, train_idx, val_idx, window=250, stride=125, max_records=200)
    assert sum(reads) == 400
    second = probe.linear_probe_auc(encoder, store, train_idx, val_idx, window=250, stride=125, max_records=200)
    assert sum(reads) == 400  # nothing read again
    assert second == first
    probe.linear_probe_auc(encoder, store, train_idx, val_idx[:50], window=250, stride=125, max_records=200)
    assert sum(reads) == 650  # other records: read (and the cache holds only the latest)
    assert len(probe._CACHE) == 1
