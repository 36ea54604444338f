"""Whole records read in grouped spans equal the records read one by one, in the order asked."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.data import records as records_module
from ecg_ray.data.records import read_records, span_groups
from ecg_ray.data.store import EcgStore
from tests.data.synthetic_stores import grouped_store


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    # 12,000 records of 60 samples = 5.5 chunks of 131,072 samples: groups cross chunk borders
    return EcgStore(grouped_store(tmp_path_factory.mktemp("records") / "s", {"A": 6000, "B": 6000}))


def test_span_groups_respect_the_limit():
    offsets = np.array([0, 10, 20, 100, 105, 300])
    lengths = np.array([10, 10, 10, 5, 50, 400])
    groups = span_groups(offsets, lengths, max_span=60)
    assert [g.tolist() for g in groups] == [[0, 1, 2], [3, 4], [5]]  # the 400-sample record alone


def test_read_records_equals_one_by_one_in_any_order(big_store, monkeypatch):
    rng = np.random.default_rng(0)
    indices = rng.choice(len(big_store), 3000, replace=False)  # unsorted, spread over all chunks
    indices = np.concatenate([indices, indices[:5]])  # duplicates too
    calls = []
    real = records_module.read_span
    monkeypatch.setattr(records_module, "read_span", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = read_records(big_store, indices)
    assert len(got) == len(indices)
    for i, signal in zip(indices, got, strict=True):
        np.testing.assert_array_equal(signal, big_store.signal(int(i)))
        assert signal[0, 0] == i  # lead 0 encodes the record number
    # one read per group of neighbours (<= 2 chunks each), not one per record
    assert len(calls) <= 2 * 6 + 1


def test_read_records_small_span_and_empty(big_store):
    indices = np.array([11999, 0, 5000])
    got = read_records(big_store, indices, max_span=30)  # shorter than a record: one group each
    assert [int(s[0, 0]) for s in got] == [11999, 0, 5000]
    assert read_records(big_store, np.array([], dtype=np.int64)) == []
