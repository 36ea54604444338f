"""Signal standardization: lead order, resampling, and the checks on one record."""

import numpy as np
import pytest

from ecg_ray.data.signal import CANONICAL_LEADS, canonical_lead_name, resample, standardize
from ecg_ray.errors import RecordError


def _signal(n=1000, leads=12, seed=0):
    return np.random.default_rng(seed).normal(size=(n, leads))


def test_reorders_to_canonical_leads():
    order = ["V1", "V2", "V3", "V4", "V5", "V6", "I", "II", "III", "AVR", "AVL", "AVF"]
    raw = np.tile(np.arange(12.0), (5, 1))  # column j holds value j
    out = standardize(raw, 100, order, 100, "r", "f.hea")
    expected = [order.index(next(o for o in order if canonical_lead_name(o) == lead)) for lead in CANONICAL_LEADS]
    assert out.dtype == np.float32 and out.shape == (5, 12)
    np.testing.assert_array_equal(out[0], expected)


@pytest.mark.parametrize("fs_in,fs_out,n_in,n_out", [(500, 100, 5000, 1000), (400, 100, 4000, 1000),
                                                      (257, 100, 2570, 1000), (1000, 100, 10000, 1000)])
def test_resample_lengths(fs_in, fs_out, n_in, n_out):
    assert resample(_signal(n_in), fs_in, fs_out).shape == (n_out, 12)


def test_resample_removes_aliasing():
    # A 70 Hz tone is above the 50 Hz Nyquist limit of 100 Hz and would alias to 30 Hz under plain
    # decimation; the anti-aliasing filter must remove it while a 5 Hz tone passes unchanged.
    t = np.arange(5000) / 500
    low, high = np.sin(2 * np.pi * 5 * t), np.sin(2 * np.pi * 70 * t)
    out = resample(np.stack([low + high] * 12, 1), 500, 100)[50:-50, 0]
    ref = np.sin(2 * np.pi * 5 * (np.arange(1000) / 100))[50:-50]
    assert np.sqrt(np.mean((out - ref) ** 2)) < 0.05


@pytest.mark.parametrize("mutate,message", [
    (lambda s, leads: (np.where(np.arange(s.size).reshape(s.shape) == 7, np.nan, s), leads, 100), "NaN"),
    (lambda s, leads: (np.where(np.arange(s.size).reshape(s.shape) == 7, np.inf, s), leads, 100), "inf"),
    (lambda s, leads: (s[:, :11], leads[:11], 100), "missing lead"),
    (lambda s, leads: (s, leads[:11] + ["X9"], 100), "unknown lead"),
    (lambda s, leads: (np.c_[s, s[:, :1]], leads + ["I"], 100), "duplicate"),
    (lambda s, leads: (s, leads, 7), "sampling rate"),
    (lambda s, leads: (s, leads, "abc"), "not a number"),
    (lambda s, leads: (s[:0], leads, 100), "empty"),
])
def test_bad_records_name_the_problem(mutate, message):
    signal, leads, fs = mutate(_signal(), list(CANONICAL_LEADS))
    with pytest.raises(RecordError, match=message) as info:
        standardize(signal, fs, leads, 100, "rec1", "/data/rec1.hea")
    assert "/data/rec1.hea" in str(info.value)
