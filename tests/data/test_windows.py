"""Evaluation windows: the one cutter, against a record-by-record reference, and the three readers that use it."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.data.store import EcgStore
from ecg_ray.data.windows import (
    cut_span_windows,
    cut_windows,
    read_windows,
    window_counts,
    window_plan,
    window_starts,
)
from ecg_ray.errors import ConfigError


def reference_windows(records, indices, window, stride):
    """Every window of every record, written out one window at a time (start k*stride, k = 0, 1, ...)."""
    signal, record_index, window_index = [], [], []
    for i, record in zip(indices, records, strict=True):
        k = 0
        while k * stride + window <= len(record):
            signal.append(record[k * stride:k * stride + window].T)
            record_index.append(i)
            window_index.append(k)
            k += 1
    return (np.array(signal, dtype=np.float32).reshape(-1, 12, window), np.array(record_index, dtype=np.int64),
            np.array(window_index, dtype=np.int64))


@pytest.fixture
def records():
    rng = np.random.default_rng(0)
    # shorter than the window, exactly one window, a stride short of a second, ten seconds, odd lengths
    lengths = [100, 250, 374, 375, 1000, 1013, 0, 5000]
    return [rng.standard_normal((n, 12)).astype(np.float32) for n in lengths]


@pytest.mark.parametrize("window, stride", [(250, 125), (250, 250), (100, 33), (7, 1)])
def test_cut_windows_equals_the_reference(records, window, stride):
    indices = np.arange(len(records)) * 10 + 3
    windows = cut_windows(records, indices, window, stride)
    signal, record_index, window_index = reference_windows(records, indices, window, stride)
    np.testing.assert_array_equal(windows.signal, signal)
    np.testing.assert_array_equal(windows.record_index, record_index)
    np.testing.assert_array_equal(windows.window_index, window_index)
    assert windows.signal.dtype == np.float32 and windows.signal.flags.c_contiguous
    assert len(windows) == window_counts([len(r) for r in records], window, stride).sum()


def test_counts_starts_and_plan():
    assert window_counts(np.array([1000, 249, 250, 374, 375]), 250, 125).tolist() == [7, 0, 1, 1, 2]
    assert window_starts(1000, 250, 125).tolist() == [0, 125, 250, 375, 500, 625, 750]
    assert window_starts(200, 250, 125).size == 0
    position, window_index = window_plan(np.array([375, 10, 500]), 250, 125)
    assert position.tolist() == [0, 0, 2, 2, 2]
    assert window_index.tolist() == [0, 1, 0, 1, 2]


@pytest.mark.parametrize("window, stride", [(0, 125), (250, 0), (-1, 1)])
def test_non_positive_window_or_stride_is_a_config_error(window, stride):
    with pytest.raises(ConfigError, match="window and stride must be positive"):
        window_counts(np.array([1000]), window, stride)


def test_no_records_and_mismatched_indices(records):
    empty = cut_windows([], np.zeros(0, np.int64), 250, 125)
    assert empty.signal.shape == (0, 12, 250) and len(empty) == 0
    with pytest.raises(ValueError, match="2 records but 1 indices"):
        cut_windows(records[:2], np.array([0]), 250, 125)


def test_span_windows_equal_record_windows(records):
    starts = np.cumsum([0] + [len(r) + 17 for r in records[:-1]])  # gaps between records, as a sparse span has
    span = np.zeros((int(starts[-1]) + len(records[-1]), 12), np.float32)
    for s, r in zip(starts, records, strict=True):
        span[s:s + len(r)] = r
    lengths = np.array([len(r) for r in records])
    a = cut_span_windows(span, starts, lengths, np.arange(len(records)), 250, 125)
    b = cut_windows(records, np.arange(len(records)), 250, 125)
    for field in ("signal", "record_index", "window_index"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_store_windows_equal_the_reference_and_the_stream_read_task(ptbxl_store):
    """read_windows (evaluation, probe) and the Ray Data read task (eval_windows) give the same windows
    as the reference cut from each record read on its own (EcgStore.signal)."""
    from ray.data.block import BlockAccessor

    from ecg_ray.data.stream import _read_windows, _ReadSpec

    store = EcgStore(ptbxl_store)
    indices = np.sort(np.random.default_rng(1).choice(len(store), 80, replace=False))
    expected = reference_windows([store.signal(int(i)) for i in indices], indices, 250, 125)
    got = read_windows(store, indices, 250, 125)
    assert len(got) == 7 * len(indices)  # 10 s records at 100 Hz
    for value, want in zip((got.signal, got.record_index, got.window_index), expected, strict=True):
        np.testing.assert_array_equal(value, want)

    spec = _ReadSpec(stores=(str(store.path),), versions=(store.version,), chunks=(None,), mode="windows",
                     width=250, stride=125)
    labels = store.label_matrix("all")
    block = _read_windows(spec, 0, np.zeros(len(indices), np.int32), indices, store.column("offset")[indices],
                          store.column("length")[indices], labels[indices])
    batch = BlockAccessor.for_block(block).to_batch_format("numpy")
    np.testing.assert_array_equal(batch["signal"], expected[0])
    np.testing.assert_array_equal(batch["record_index"], expected[1])
    np.testing.assert_array_equal(batch["window_index"], expected[2])
    np.testing.assert_array_equal(batch["labels"], labels[expected[1]].astype(np.float32))
