"""Seeded test-time noise at a given signal-to-noise ratio, for the robustness evaluation.

The paper adds noise to the validation windows at six maximum amplitudes per type, drawn fresh
each run, without an SNR definition. Here a noise level is an SNR in dB relative to each
*record's* power, and the noise is a pure function of (seed, record, window, type), so every
model is evaluated on exactly the same noisy test set whatever the batch order or worker count.

Definitions
-----------
* Record power ``P_record``: mean of ``x**2`` over leads and time of the clean record after
  removing each lead's mean (:func:`record_power`); the DC offset of a lead carries no ECG
  information and differs between devices, so it must not set the noise level.
* Noise power: mean of ``n**2`` over the leads and samples of the window, DC included (a
  baseline shift *is* an offset). Each window's noise is scaled to exactly
  ``P_record / 10**(snr_db / 10)``, so ``10*log10(P_record / P_noise) == snr_db`` holds for every
  window and hence for all windows of a record (:func:`measured_snr_db` checks it).
* Overlapping windows of a record get independent noise draws (one generator per window, as
  when the reference adds noise to each window in its loader).

Noise types (:data:`NOISE_TYPES`), each produced with unit mean power by :func:`make_noise`
------------------------------------------------------------------------------------------
``baseline_wander``
    Respiration/movement drift: four sinusoids with frequencies U(0.05, 0.5) Hz and random
    phases shared by all leads, mixed into each lead with N(0, 1) gains (leads see the same
    physical drift with different projections).
``electrode_motion``
    Model of the MIT-BIH Noise Stress Test 'em' record (electrode-skin impedance changes when
    the electrode moves): Gaussian noise band-limited to 1-10 Hz (capped at Nyquist), where it
    overlaps the P/QRS/T spectrum and cannot be filtered out, in bursts. One burst per started
    5 s of window, each a Hann-tapered segment of U(0.2, 0.6) of the window at a random position,
    with the envelope shared by all leads (a movement is one event) and per-lead gains U(0.2, 1).
``muscle_artifact``
    EMG ('ma' in MIT-BIH): stationary Gaussian noise band-limited to 20 Hz .. Nyquist (above
    the bulk of the ECG power), independent per lead, per-lead gains U(0.5, 1). If Nyquist is
    at or below 20 Hz the band starts at Nyquist / 2 instead.
``powerline``
    Mains interference: ``mains`` Hz (50 or 60) plus the 2nd and 3rd harmonics, sampled at the
    store's rate ``fs``, with one phase per harmonic shared by all leads and signed per-lead gains
    of magnitude U(0.2, 1). The fundamental is always present and aliases like the reference's
    PowerlineNoise evaluated at 100 Hz (60 Hz at fs=100 appears at 40 Hz). Harmonics are kept only
    strictly below Nyquist: a stored signal went through an anti-alias filter, so harmonics above
    Nyquist would not survive, and at fs=100 they would alias onto DC and Nyquist. At fs=100,
    50 Hz is exactly Nyquist and the sampled sinusoid is ``(-1)**n * cos(phi)``; its power
    depends on the phase alone, so a phase with ``|cos(phi)| < 0.5`` is replaced by ``phi = 0``
    (the same rule applies to any component that aliases onto DC or Nyquist). The result at
    fs=100, mains=50 is therefore the alternating sequence with per-lead amplitudes.
``baseline_shift``
    Abrupt offsets (electrode pops, amplifier re-centring): 1-3 step segments, each covering
    10-50% of the window at a random position with level +/-U(0.5, 1) shared across leads and
    per-lead gains U(0.5, 1).
``all``
    The five types above, each drawn with unit power (equal power shares) and summed, then
    rescaled to unit power (so the target SNR holds for the sum).

For an SNR sweep, :func:`window_noise` draws the unit-power noise once (the SNR is not part of
the seed) and :func:`add_noise` rescales it per level.

This module is numpy-only on purpose (train-time augmentations in :mod:`ecg_ray.augment` are
torch and bounded by amplitude; these are a fixed, seeded evaluation protocol).
"""

from __future__ import annotations

from collections.abc import Mapping
from math import ceil

import numpy as np

NOISE_TYPES = ("baseline_wander", "electrode_motion", "muscle_artifact", "powerline", "baseline_shift", "all")
_COMPONENTS = NOISE_TYPES[:5]


def _type_id(kind: str) -> int:
    if kind not in NOISE_TYPES:
        raise ValueError(f"unknown noise kind {kind!r}; valid kinds: {', '.join(NOISE_TYPES)}")
    return NOISE_TYPES.index(kind)


def _band_limited(rng: np.random.Generator, leads: int, t: int, fs: float, low: float, high: float) -> np.ndarray:
    """White Gaussian noise per lead with every FFT bin outside [low, high] Hz set to zero."""
    white = rng.standard_normal((leads, t))
    freqs = np.fft.rfftfreq(t, d=1.0 / fs)
    keep = (freqs >= low) & (freqs <= high)
    if not keep.any():  # a window too short to resolve the band: keep the bin closest to its centre
        keep[np.argmin(np.abs(freqs - (low + high) / 2))] = True
    return np.fft.irfft(np.fft.rfft(white, axis=-1) * keep, n=t, axis=-1)


def _baseline_wander(rng, leads, t, fs, mains):
    time = np.arange(t) / fs
    freqs = rng.uniform(0.05, 0.5, size=4)
    phases = rng.uniform(0.0, 2 * np.pi, size=4)
    gains = rng.standard_normal((leads, 4))
    return gains @ np.sin(2 * np.pi * freqs[:, None] * time + phases[:, None])


def _electrode_motion(rng, leads, t, fs, mains):
    noise = _band_limited(rng, leads, t, fs, 1.0, min(10.0, fs / 2))
    pos = np.arange(t) + 0.5  # sample centres: a one-sample burst still has a nonzero envelope
    envelope = np.zeros(t)
    for _ in range(max(1, ceil(t / fs / 5.0))):
        length = min(t, max(8.0, rng.uniform(0.2, 0.6) * t))
        start = rng.uniform(0.0, t - length)
        envelope += np.sin(np.pi * np.clip((pos - start) / length, 0.0, 1.0)) ** 2
    gains = rng.uniform(0.2, 1.0, size=(leads, 1))
    return noise * envelope * gains


def _muscle_artifact(rng, leads, t, fs, mains):
    nyquist = fs / 2
    low = 20.0 if nyquist > 20.0 else nyquist / 2
    return _band_limited(rng, leads, t, fs, low, nyquist) * rng.uniform(0.5, 1.0, size=(leads, 1))


def _aliases_to_dc_or_nyquist(freq: float, fs: float) -> bool:
    folded = abs((freq + fs / 2) % fs - fs / 2)  # the frequency the samples show, in [0, fs/2]
    return min(folded, abs(folded - fs / 2)) < 1e-9 * fs


def _powerline(rng, leads, t, fs, mains):
    time = np.arange(t) / fs
    # Always draw all three harmonics so the stream of random numbers does not depend on fs.
    amps = np.concatenate(([1.0], rng.uniform(0.0, 0.5, size=2)))
    phases = rng.uniform(0.0, 2 * np.pi, size=3)
    gains = rng.uniform(0.2, 1.0, size=leads) * np.where(rng.random(leads) < 0.5, -1.0, 1.0)
    wave = np.zeros(t)
    for k in range(1, 4):
        freq = k * mains
        if k > 1 and freq >= fs / 2:
            continue  # removed by the anti-alias filter of a signal sampled at fs
        phase = phases[k - 1]
        if _aliases_to_dc_or_nyquist(freq, fs) and abs(np.cos(phase)) < 0.5:
            phase = 0.0  # the sampled amplitude is cos(phase): keep it away from ~0
        wave += amps[k - 1] * np.cos(2 * np.pi * freq * time + phase)
    return gains[:, None] * wave


def _baseline_shift(rng, leads, t, fs, mains):
    out = np.zeros((leads, t))
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.integers(max(1, t // 10), max(1, t // 2) + 1))
        start = int(rng.integers(0, t - length + 1))
        level = (-1.0 if rng.random() < 0.5 else 1.0) * rng.uniform(0.5, 1.0)
        out[:, start:start + length] += level * rng.uniform(0.5, 1.0, size=(leads, 1))
    return out


_GENERATORS = {
    "baseline_wander": _baseline_wander,
    "electrode_motion": _electrode_motion,
    "muscle_artifact": _muscle_artifact,
    "powerline": _powerline,
    "baseline_shift": _baseline_shift,
}


def _unit_power(x: np.ndarray) -> np.ndarray:
    flat = x.ravel()
    power = float(flat @ flat) / flat.size  # a dot product: several times faster than mean(x * x)
    if not power > 0.0:
        raise ValueError("generated noise has zero power (window too short?)")
    return x / np.sqrt(power)


def _one(kind: str, leads: int, t: int, fs: float, rng: np.random.Generator, mains: float) -> np.ndarray:
    if kind == "all":
        # Equal power shares: every component at unit power before summing.
        return sum(_unit_power(_GENERATORS[c](rng, leads, t, fs, mains)) for c in _COMPONENTS)
    return _GENERATORS[kind](rng, leads, t, fs, mains)


def make_noise(kind: str, shape: tuple[int, ...], fs: float, rng: np.random.Generator | int | None,
               mains: float = 50.0) -> np.ndarray:
    """Raw noise of ``kind`` with mean power exactly 1 over the whole array (float64).

    ``shape`` is (leads, T) or (n, leads, T); in the latter case each of the ``n`` windows gets
    its own draw (all from ``rng``, in order) and the array as a whole is scaled to unit power.
    ``rng`` is a numpy Generator (or a seed for one).
    """
    _type_id(kind)
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be (leads, T) or (n, leads, T) with positive sizes, got {shape}")
    if not fs > 0:
        raise ValueError(f"fs must be positive, got {fs}")
    if not mains > 0:
        raise ValueError(f"mains must be positive, got {mains}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    *batch, leads, t = shape
    if not batch:
        return _unit_power(_one(kind, leads, t, float(fs), rng, float(mains)))
    out = np.stack([_one(kind, leads, t, float(fs), rng, float(mains)) for _ in range(batch[0])])
    return _unit_power(out)


def _ordinals(record_index: np.ndarray) -> np.ndarray:
    """Position of each window among the windows of its record, in array order."""
    order = np.argsort(record_index, kind="stable")
    sorted_ids = record_index[order]
    group_start = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sizes = np.diff(np.r_[group_start, len(sorted_ids)])
    ordinal = np.empty(len(record_index), dtype=np.int64)
    ordinal[order] = np.arange(len(record_index)) - np.repeat(group_start, sizes)
    return ordinal


def _check_windows(record_index: np.ndarray, n: int, seed: int, window_ordinal: np.ndarray | None) -> np.ndarray:
    """Validate the per-window ids and return each window's ordinal within its record."""
    if record_index.shape != (n,) or not np.issubdtype(record_index.dtype, np.integer):
        raise ValueError(f"record_index must be ({n},) integers, got {record_index.shape} {record_index.dtype}")
    if n and record_index.min() < 0:
        raise ValueError("record ids must be non-negative (they seed the noise generator)")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if window_ordinal is None:
        return _ordinals(record_index)
    window_ordinal = np.asarray(window_ordinal)
    if (window_ordinal.shape != (n,) or not np.issubdtype(window_ordinal.dtype, np.integer)
            or (n and window_ordinal.min() < 0)):
        raise ValueError("window_ordinal must be non-negative integers, one per window")
    return window_ordinal


def window_noise(shape: tuple[int, int, int], record_index: np.ndarray, kind: str, fs: float, seed: int,
                 mains: float = 50.0, window_ordinal: np.ndarray | None = None) -> np.ndarray:
    """Unit-power noise (float32, ``shape`` = (n, leads, W)) for each window, as :func:`add_noise` draws it.

    Window ``i`` gets ``make_noise(kind, (leads, W), fs, rng, mains)`` with
    ``rng = np.random.default_rng([seed, record_index[i], ordinal_i, NOISE_TYPES.index(kind)])``.
    The SNR is not part of the seed, so one call serves every SNR of a sweep: the noisy set at
    ``snr_db`` is ``windows + sqrt(P_record / 10**(snr_db / 10)) * noise`` (what
    :func:`add_noise` computes), and drawing the noise once saves most of a sweep's time.
    """
    type_id = _type_id(kind)
    n, leads, width = (int(v) for v in shape)
    record_index = np.asarray(record_index)
    window_ordinal = _check_windows(record_index, n, seed, window_ordinal)
    out = np.empty((n, leads, width), dtype=np.float32)
    for i in range(n):
        rng = np.random.default_rng([int(seed), int(record_index[i]), int(window_ordinal[i]), type_id])
        out[i] = make_noise(kind, (leads, width), fs, rng, mains)
    return out


def add_noise(windows: np.ndarray, record_index: np.ndarray, record_power: Mapping[int, float] | np.ndarray,
              kind: str, snr_db: float, fs: float, seed: int, mains: float = 50.0,
              window_ordinal: np.ndarray | None = None, noise: np.ndarray | None = None) -> np.ndarray:
    """Return ``windows`` (n, leads, W) plus noise at ``snr_db`` relative to each record's power.

    ``record_power`` maps a record id to its clean power (a dict, or an array indexed by id), see
    :func:`record_power`. Window ``i`` gets noise from
    ``np.random.default_rng([seed, record_index[i], ordinal_i, NOISE_TYPES.index(kind)])``,
    scaled to power ``P_record / 10**(snr_db / 10)``. ``ordinal_i`` is ``window_ordinal[i]`` if
    given (e.g. the window's start position number), else the window's position among the
    windows of its record in array order; pass each record's windows in start order (as the
    sliding-window cutter produces them), or pass ``window_ordinal``, to make the noisy set
    independent of how windows are batched. ``noise`` may pass the unit-power draws of
    :func:`window_noise` (same arguments) to reuse them across SNRs. ``snr_db=inf`` adds nothing.
    The input is not modified; the output has its (float) dtype.
    """
    _type_id(kind)
    windows = np.asarray(windows)
    record_index = np.asarray(record_index)
    if windows.ndim != 3:
        raise ValueError(f"windows must be (n, leads, W), got shape {windows.shape}")
    if np.isnan(snr_db):
        raise ValueError("snr_db must not be NaN")
    if np.isposinf(snr_db):
        _check_windows(record_index, len(windows), seed, window_ordinal)
        return windows.copy()  # no noise: skip the draws
    if noise is None:
        noise = window_noise(windows.shape, record_index, kind, fs, seed, mains, window_ordinal)
    else:
        _check_windows(record_index, len(windows), seed, window_ordinal)
        if noise.shape != windows.shape:
            raise ValueError(f"noise must have the windows' shape {windows.shape}, got {noise.shape}")
    if isinstance(record_power, Mapping):
        power = np.array([record_power[int(r)] for r in record_index], dtype=np.float64)
    else:
        power = np.asarray(record_power, dtype=np.float64)[record_index]
    scale = np.sqrt(power / 10.0 ** (float(snr_db) / 10.0))
    # Work in the windows' float dtype, in place: float32 rounding moves the SNR by ~1e-6 dB, and
    # a test set is large (15k windows x 12 x 250), so temporaries in float64 would cost seconds.
    dtype = windows.dtype if np.issubdtype(windows.dtype, np.floating) else np.float64
    out = np.asarray(noise, dtype=dtype).copy()
    out *= scale.astype(dtype)[:, None, None]
    out += windows
    return out


def record_power(signal: np.ndarray) -> float:
    """Mean power of a clean record (T, leads) after removing each lead's mean."""
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"signal must be (T, leads), got shape {x.shape}")
    x = x - x.mean(axis=0, keepdims=True)
    return float(np.mean(x * x))


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray, power: float) -> float:
    """SNR in dB of ``noisy`` against ``clean`` given the clean record's ``power``.

    The noise is ``noisy - clean`` (any shape, e.g. all windows of one record); its power is the
    plain mean square, the definition :func:`add_noise` scales to.
    """
    diff = np.asarray(noisy, dtype=np.float64) - np.asarray(clean, dtype=np.float64)
    noise_power = float(np.mean(diff * diff))
    if noise_power == 0.0:
        return float("inf")
    return float(10.0 * np.log10(power / noise_power))
