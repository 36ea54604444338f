"""Resampling at the record's ends: no step from an assumed zero beyond the edges, passband intact."""

from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import resample_poly

from ecg_ray.data.signal import resample

RATES = [500, 257, 1000, 400]


def _zero_padded(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """What ``resample`` returned before the fix: scipy's default, zeros assumed beyond the ends."""
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator, axis=0)


@pytest.mark.parametrize("fs_in", RATES)
def test_dc_offset_stays_flat_to_the_last_sample(fs_in):
    # every lead its own offset, 1 mV in lead 0; 10 s of it
    offsets = np.linspace(-2.0, 3.0, 12)
    offsets[0] = 1.0
    x = np.tile(offsets, (fs_in * 10, 1))
    out = resample(x, fs_in, 100)
    assert out.shape == (1000, 12)
    assert abs(out[0, 0] - 1.0) < 1e-3 and abs(out[-1, 0] - 1.0) < 1e-3
    np.testing.assert_allclose(out, np.tile(offsets, (1000, 1)), atol=2e-4)


def test_the_dc_check_catches_zero_padding():
    # the same record through the old call rings at the ends: the test above would have failed
    old = _zero_padded(np.ones((5000, 1)), 500, 100)
    assert old[0, 0] == pytest.approx(0.600, abs=1e-3)
    assert old[-1, 0] == pytest.approx(1.084, abs=1e-3)


@pytest.mark.parametrize("fs_in", RATES)
def test_dc_plus_linear_trend_has_no_edge_transient(fs_in):
    # 0.3 mV offset drifting by 0.05 mV/s (0.5 mV over the record), opposite sign in lead 1
    t_in = np.arange(fs_in * 10) / fs_in
    x = np.stack([0.3 + 0.05 * t_in, -1.2 - 0.08 * t_in], axis=1)
    out = resample(x, fs_in, 100)
    t_out = np.arange(out.shape[0]) / 100
    expected = np.stack([0.3 + 0.05 * t_out, -1.2 - 0.08 * t_out], axis=1)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    # the zero-padded result missed by ~0.1 mV or more at the start (lead 1 starts at -1.2 mV)
    assert np.abs(_zero_padded(x, fs_in, 100) - expected)[:3].max() > 0.05


@pytest.mark.parametrize("fs_in", RATES)
def test_five_hz_sine_passband_unchanged(fs_in):
    t_in = np.arange(fs_in * 10) / fs_in
    x = np.sin(2 * np.pi * 5 * t_in)[:, None]
    out = resample(x, fs_in, 100)[:, 0]
    analytic = np.sin(2 * np.pi * 5 * np.arange(1000) / 100)
    # away from the ends the filter never reaches past the record: bit for bit the old output
    old = _zero_padded(x, fs_in, 100)[:, 0]
    np.testing.assert_allclose(out[12:-12], old[12:-12], rtol=0, atol=1e-12)
    # everywhere, ends included, within the FIR's passband ripple of the true sine
    # (the zero-padded version was off by ~0.03 at the first samples)
    assert np.abs(out - analytic).max() < 2e-3
    assert np.abs(old - analytic)[:3].max() > 0.02


def test_one_sample_record_keeps_its_value():
    # nothing to reflect about; scipy's antireflect mode crashes the process on length 1
    x = np.full((1, 12), 0.7)
    out = resample(x, 500, 100)
    assert out.shape == (1, 12)
    np.testing.assert_allclose(out, 0.7, atol=1e-12)


def test_two_sample_record_resamples_a_line_exactly():
    x = np.array([[1.0], [1.1]])
    out = resample(x, 257, 100)
    assert out.shape == (1, 1)
    assert out[0, 0] == pytest.approx(1.0, abs=1e-4)
