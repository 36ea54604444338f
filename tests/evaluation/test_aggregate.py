"""Per-record averaging of window outputs against a hand-worked example."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.evaluation.aggregate import average_per_record


def test_average_per_record_hand_example():
    # Windows arrive interleaved and unsorted: record 7 has three windows, 2 has two, 5 has one.
    record_index = np.array([7, 2, 7, 5, 2, 7])
    scores = np.array([[0.1, 0.9], [0.4, 0.0], [0.2, 0.6], [0.5, 0.5], [0.6, 1.0], [0.6, 0.3]], dtype=np.float32)
    records, mean = average_per_record(record_index, scores)
    np.testing.assert_array_equal(records, [2, 5, 7])
    expected = [[(0.4 + 0.6) / 2, (0.0 + 1.0) / 2], [0.5, 0.5], [(0.1 + 0.2 + 0.6) / 3, (0.9 + 0.6 + 0.3) / 3]]
    np.testing.assert_allclose(mean, expected, rtol=1e-6)
    assert mean.dtype == np.float64


def test_average_per_record_matches_add_at_on_random_input():
    rng = np.random.default_rng(0)
    record_index = rng.integers(0, 50, size=400)
    scores = rng.random((400, 5))
    records, mean = average_per_record(record_index, scores)
    ref = np.zeros((50, 5))
    np.add.at(ref, record_index, scores)
    counts = np.bincount(record_index, minlength=50)
    np.testing.assert_allclose(mean, ref[records] / counts[records, None])


def test_average_per_record_empty_and_bad_shapes():
    records, mean = average_per_record(np.array([], dtype=int), np.zeros((0, 3)))
    assert records.shape == (0,) and mean.shape == (0, 3)
    with pytest.raises(ValueError):
        average_per_record(np.array([0, 1]), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        average_per_record(np.array([0, 1]), np.zeros(2))
