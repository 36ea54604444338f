"""Seeded test-time noise: reproducibility, exact SNR on ECG signals, and each type's spectrum."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.evaluation import noise
from ecg_ray.evaluation.noise import (
    NOISE_TYPES,
    add_noise,
    make_noise,
    measured_snr_db,
    record_power,
    window_noise,
)

SNRS = (24.0, 12.0, 0.0, -6.0)


def ecg_like(fs: float, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
    """A (T, 12) float32 beat train: P, QRS and T waves as Gaussians at 72 bpm, per-lead gains and DC.

    Its power sits mostly at 1-20 Hz like a real ECG; the per-lead offsets check that the record
    power ignores each lead's mean.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    wave = np.zeros_like(t)
    for beat in np.arange(0.3, seconds, 60 / 72):
        for shift, width, amp in ((-0.16, 0.025, 0.15), (0.0, 0.012, 1.0), (0.25, 0.06, 0.3)):
            wave += amp * np.exp(-0.5 * ((t - beat - shift) / width) ** 2)
    gains = rng.uniform(-1.5, 1.5, size=12)
    offsets = rng.uniform(-2, 2, size=12)
    return (wave[:, None] * gains + offsets).astype(np.float32)


def sliding(record: np.ndarray, window: int, stride: int) -> np.ndarray:
    """All windows (n, 12, window) of a (T, 12) record, in start order."""
    starts = range(0, len(record) - window + 1, stride)
    return np.stack([record[s:s + window].T for s in starts])


def build_set(records: list[np.ndarray], window: int, stride: int, ids: list[int]):
    windows = [sliding(r, window, stride) for r in records]
    record_index = np.concatenate([np.full(len(w), i) for w, i in zip(windows, ids, strict=True)])
    powers = {i: record_power(r) for r, i in zip(records, ids, strict=True)}
    return np.concatenate(windows), record_index, powers


def assert_snr(clean, noisy, record_index, powers, snr_db):
    for rec, power in powers.items():
        rows = record_index == rec
        assert measured_snr_db(clean[rows], noisy[rows], power) == pytest.approx(snr_db, abs=0.5)
        # Stronger than asked: every single window is scaled exactly (float32 rounding only).
        for row in np.flatnonzero(rows):
            assert measured_snr_db(clean[row], noisy[row], power) == pytest.approx(snr_db, abs=0.01)


def test_record_power_removes_each_leads_mean():
    signal = np.array([[1.0, 10.0], [3.0, 10.0], [1.0, 12.0], [3.0, 12.0]])
    assert record_power(signal) == pytest.approx(1.0)
    assert record_power(signal + [5.0, -7.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", NOISE_TYPES)
@pytest.mark.parametrize("snr_db", SNRS)
def test_snr_on_synthetic_ecg(kind, snr_db):
    records = [ecg_like(100, seed=s) for s in range(3)]
    windows, record_index, powers = build_set(records, 250, 125, [0, 5, 11])
    noisy = add_noise(windows, record_index, powers, kind, snr_db, fs=100, seed=1)
    assert noisy.dtype == np.float32 and noisy.shape == windows.shape
    assert_snr(windows, noisy, record_index, powers, snr_db)


@pytest.mark.parametrize("kind", NOISE_TYPES)
def test_snr_on_real_ptbxl_records(kind, ptbxl_dir):
    wfdb = pytest.importorskip("wfdb")
    records = [wfdb.rdsamp(str(ptbxl_dir / "records100" / "00000" / f"{i:05d}_lr"))[0].astype(np.float32)
               for i in range(1, 6)]
    windows, record_index, powers = build_set(records, 250, 125, list(range(1, 6)))
    for snr_db in SNRS:
        noisy = add_noise(windows, record_index, powers, kind, snr_db, fs=100, seed=0)
        assert_snr(windows, noisy, record_index, powers, snr_db)


@pytest.mark.parametrize("kind", ["powerline", "all"])
def test_snr_at_500_hz(kind):
    records = [ecg_like(500, seed=s) for s in range(2)]
    windows, record_index, powers = build_set(records, 1250, 625, [3, 4])
    for snr_db in SNRS:
        noisy = add_noise(windows, record_index, powers, kind, snr_db, fs=500, seed=2)
        assert_snr(windows, noisy, record_index, powers, snr_db)


def test_seeded_and_independent_of_batch_order():
    records = [ecg_like(100, seed=s) for s in range(4)]
    windows, record_index, powers = build_set(records, 250, 125, [0, 1, 2, 3])
    a = add_noise(windows, record_index, powers, "all", 6.0, fs=100, seed=7)
    np.testing.assert_array_equal(a, add_noise(windows, record_index, powers, "all", 6.0, fs=100, seed=7))
    assert not np.allclose(a, add_noise(windows, record_index, powers, "all", 6.0, fs=100, seed=8))
    # The kind is part of the generator's seed: two kinds never share random numbers.
    assert not np.allclose(a - windows, add_noise(windows, record_index, powers, "muscle_artifact", 6.0,
                                                  fs=100, seed=7) - windows)
    # Records in another order, and in separate batches, get the same noise window by window.
    by_record = np.argsort(-record_index, kind="stable")
    shuffled = add_noise(windows[by_record], record_index[by_record], powers, "all", 6.0, fs=100, seed=7)
    np.testing.assert_array_equal(shuffled, a[by_record])
    first = record_index < 2
    part = add_noise(windows[~first], record_index[~first], powers, "all", 6.0, fs=100, seed=7)
    np.testing.assert_array_equal(part, a[~first])
    # With explicit ordinals any permutation of the windows reproduces the set.
    ordinal = noise._ordinals(record_index)
    perm = np.random.default_rng(0).permutation(len(windows))
    permuted = add_noise(windows[perm], record_index[perm], powers, "all", 6.0, fs=100, seed=7,
                         window_ordinal=ordinal[perm])
    np.testing.assert_array_equal(permuted, a[perm])


def test_noise_drawn_once_serves_every_snr():
    records = [ecg_like(100, seed=s) for s in range(2)]
    windows, record_index, powers = build_set(records, 250, 125, [4, 9])
    unit = window_noise(windows.shape, record_index, "electrode_motion", fs=100, seed=3)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(np.mean(unit.astype(np.float64) ** 2, axis=(1, 2)), 1.0, rtol=1e-6)
    for snr_db in SNRS:
        direct = add_noise(windows, record_index, powers, "electrode_motion", snr_db, fs=100, seed=3)
        reused = add_noise(windows, record_index, powers, "electrode_motion", snr_db, fs=100, seed=3, noise=unit)
        np.testing.assert_array_equal(direct, reused)


def test_array_power_input_infinite_snr_and_no_mutation():
    records = [ecg_like(100, seed=s) for s in range(2)]
    windows, record_index, powers = build_set(records, 250, 125, [0, 1])
    before = windows.copy()
    power_array = np.array([powers[0], powers[1]])
    from_dict = add_noise(windows, record_index, powers, "powerline", 3.0, fs=100, seed=0)
    from_array = add_noise(windows, record_index, power_array, "powerline", 3.0, fs=100, seed=0)
    np.testing.assert_array_equal(from_dict, from_array)
    np.testing.assert_array_equal(windows, before)
    np.testing.assert_array_equal(add_noise(windows, record_index, powers, "all", np.inf, fs=100, seed=0), windows)


def test_unknown_kind_and_bad_arguments():
    with pytest.raises(ValueError, match="baseline_wander.*all"):
        make_noise("gaussian", (12, 250), 100, np.random.default_rng(0))
    windows = np.zeros((2, 12, 250), np.float32)
    with pytest.raises(ValueError, match="valid kinds"):
        add_noise(windows, np.array([0, 0]), {0: 1.0}, "white", 0.0, fs=100, seed=0)
    with pytest.raises(ValueError):
        add_noise(windows, np.array([0, -1]), {0: 1.0, -1: 1.0}, "powerline", 0.0, fs=100, seed=0)
    with pytest.raises(ValueError):
        add_noise(windows, np.array([0, 0]), {0: 1.0}, "powerline", 0.0, fs=100, seed=-3)


@pytest.mark.parametrize("kind", NOISE_TYPES)
@pytest.mark.parametrize("shape", [(12, 250), (3, 12, 250), (12, 1000)])
def test_make_noise_has_unit_power(kind, shape):
    for seed in range(5):
        x = make_noise(kind, shape, 100, np.random.default_rng(seed))
        assert x.shape == shape
        assert np.mean(x**2) == pytest.approx(1.0, rel=1e-9)


def test_all_is_the_renormalised_sum_of_unit_power_components():
    rng = np.random.default_rng(4)
    parts = [make_noise(kind, (12, 250), 100, rng) for kind in NOISE_TYPES[:5]]
    total = np.sum(parts, axis=0)
    np.testing.assert_allclose(make_noise("all", (12, 250), 100, np.random.default_rng(4)),
                               total / np.sqrt(np.mean(total**2)))


def band_fraction(x: np.ndarray, fs: float, low: float, high: float) -> float:
    """Share of the power of ``x`` (..., T) in [low, high] Hz, DC included when low is 0."""
    power = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / fs)
    return float(power[..., (freqs >= low) & (freqs <= high)].sum() / power.sum())


def spectral_peak(x: np.ndarray, fs: float) -> float:
    power = (np.abs(np.fft.rfft(x, axis=-1)) ** 2).sum(axis=0)
    return float(np.fft.rfftfreq(x.shape[-1], 1 / fs)[np.argmax(power)])


def test_powerline_peaks_at_mains_when_sampled_fast_enough():
    for seed in range(10):
        x = make_noise("powerline", (12, 5000), 500, np.random.default_rng(seed))
        assert spectral_peak(x, 500) == pytest.approx(50.0)
        assert band_fraction(x, 500, 49, 51) + band_fraction(x, 500, 99, 101) + band_fraction(x, 500, 149, 151) \
            == pytest.approx(1.0)
        x60 = make_noise("powerline", (12, 6000), 500, np.random.default_rng(seed), mains=60.0)
        assert spectral_peak(x60, 500) == pytest.approx(60.0)


def test_powerline_at_100_hz_is_the_alternating_sequence_with_real_power():
    sign = (-1.0) ** np.arange(250)
    for seed in range(200):
        x = make_noise("powerline", (12, 250), 100, np.random.default_rng(seed))
        per_lead = x * sign  # undoing the alternation leaves one constant per lead
        np.testing.assert_allclose(per_lead, per_lead[:, :1] * np.ones(250), atol=1e-9)
        # Before normalisation the amplitude is gain * cos(phi) with |gain| >= 0.2, |cos(phi)| >= 0.5.
        raw = noise._GENERATORS["powerline"](np.random.default_rng(seed), 12, 250, 100.0, 50.0)
        assert np.abs(raw).min() >= 0.1 - 1e-12


def test_60_hz_mains_aliases_to_40_hz_at_100_hz():
    x = make_noise("powerline", (12, 1000), 100, np.random.default_rng(0), mains=60.0)
    assert spectral_peak(x, 100) == pytest.approx(40.0)


@pytest.mark.parametrize("fs", [100, 500])
def test_spectra_of_wander_muscle_and_motion(fs):
    for seed in range(10):
        rng = np.random.default_rng(seed)
        # Long noise so that the frequency resolution (1/60 Hz) separates the bands cleanly.
        assert band_fraction(make_noise("baseline_wander", (12, 60 * fs), fs, rng), fs, 0, 1.0) > 0.95
        assert band_fraction(make_noise("muscle_artifact", (12, 60 * fs), fs, rng), fs, 15.0, fs) > 0.95
        assert band_fraction(make_noise("electrode_motion", (12, 60 * fs), fs, rng), fs, 0.5, 12.0) > 0.95
        # On one evaluation window (2.5 s) the same holds, less sharply for the drift.
        window = int(2.5 * fs)
        assert band_fraction(make_noise("baseline_wander", (12, window), fs, rng), fs, 0, 1.0) > 0.85
        assert band_fraction(make_noise("muscle_artifact", (12, window), fs, rng), fs, 15.0, fs) > 0.95


def test_electrode_motion_is_bursty_and_baseline_shift_is_steps():
    for seed in range(10):
        em = make_noise("electrode_motion", (12, 1000), 100, np.random.default_rng(seed))
        energy = np.sort((em**2).sum(axis=0))[::-1]
        assert energy[:600].sum() > 0.9 * energy.sum()  # bursts cover at most 60% of a 5 s span
        shift = make_noise("baseline_shift", (12, 250), 100, np.random.default_rng(seed))
        steps = np.flatnonzero(np.any(np.diff(shift, axis=1) != 0, axis=0))
        assert 1 <= len(steps) <= 6  # at most three segments, two edges each


def test_all_splits_power_between_the_types():
    low, high = [], []
    for seed in range(20):
        x = make_noise("all", (12, 6000), 100, np.random.default_rng(seed))
        low.append(band_fraction(x, 100, 0, 1.0))  # wander + most of the shift: ~2/5
        high.append(band_fraction(x, 100, 15, 50))  # muscle + powerline: ~2/5
    assert np.mean(low) == pytest.approx(0.4, abs=0.1)
    assert np.mean(high) == pytest.approx(0.4, abs=0.1)
