"""Bringing a user's recording to what an exported encoder was trained on (numpy and scipy, no torch).

:func:`prepare_signal` does to one recording what ``ecg-ray prepare`` does to a record of a
source (:func:`ecg_ray.data.signal.standardize`): checks, leads reordered by name, resampling
with the same polyphase filter, float32 millivolts; then the encoder's normalisation (none, see
:mod:`ecg_ray.portable.spec`). :func:`record_windows` cuts the evaluation's sliding windows.

Convention: a recording is (time, leads), as in every store and source of ecg_ray; a batch is
(records, time, leads).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecg_ray.data.signal import MAX_FS, MIN_FS, canonical_lead_name, resample
from ecg_ray.errors import EcgRayError
from ecg_ray.portable.spec import NORMALIZATION_NONE, InputSpec

MISSING_LEADS = ("error", "zero")


class SignalError(EcgRayError, ValueError):
    """A recording that cannot be brought to an encoder's input (shape, rate, leads, length, values)."""


def as_array(signal) -> np.ndarray:
    """A numpy view of a numpy array, a torch tensor (any device) or a nested list."""
    if hasattr(signal, "detach") and hasattr(signal, "cpu"):  # a torch tensor, without importing torch
        signal = signal.detach().cpu().numpy()
    return np.asarray(signal)


def _lead_key(name: str) -> str:
    return canonical_lead_name(name) or str(name).strip()


def missing_leads_policy(spec: InputSpec, missing_leads: str | None) -> str:
    """``missing_leads`` checked; None means "zero" for an encoder trained with lead masking, else "error"."""
    if missing_leads is None:
        return "zero" if spec.lead_masking else "error"
    if missing_leads not in MISSING_LEADS:
        raise SignalError(f"missing_leads must be one of {', '.join(MISSING_LEADS)} (or None), got {missing_leads!r}")
    return missing_leads


def lead_columns(leads: Sequence[str], spec: InputSpec, missing_leads: str | None = None) -> list[int | None]:
    """For each of the encoder's leads, the column of ``leads`` that holds it (None: missing, to be zeroed).

    Names are matched case-insensitively with the usual aliases (``AVR``, ``D1``, ...). Unknown or
    duplicate names, and missing leads under the "error" policy, raise SignalError.
    """
    policy = missing_leads_policy(spec, missing_leads)
    keys = [_lead_key(name) for name in leads]
    wanted = [_lead_key(name) for name in spec.leads]
    unknown = [name for name, key in zip(leads, keys, strict=True) if key not in wanted]
    if unknown:
        raise SignalError(f"lead name(s) {list(unknown)} are not leads of this encoder "
                          f"(it takes {', '.join(spec.leads)}); drop those columns")
    duplicated = sorted({name for name, key in zip(leads, keys, strict=True) if keys.count(key) > 1})
    if duplicated:
        raise SignalError(f"duplicate leads {duplicated} in {list(leads)}")
    missing = [name for name, key in zip(spec.leads, wanted, strict=True) if key not in keys]
    if missing and policy == "error":
        hint = ("this encoder was not trained with lead masking; pass missing_leads='zero' to zero them anyway"
                if not spec.lead_masking else "pass missing_leads='zero' to zero them")
        raise SignalError(f"missing lead(s) {', '.join(missing)}: the encoder takes {len(spec.leads)} leads "
                          f"({', '.join(spec.leads)}), the signal has {len(leads)} ({', '.join(map(str, leads))}); {hint}")
    return [keys.index(key) if key in keys else None for key in wanted]


def prepare_signal(signal, fs: float, leads: Sequence[str] | None, spec: InputSpec, *,
                   missing_leads: str | None = None) -> np.ndarray:
    """One recording as the encoder's input: float32 (time, ``len(spec.leads)``) mV at ``spec.fs``.

    ``signal``: (time, leads) numpy array or torch tensor, in millivolts, at ``fs`` Hz, columns
    named by ``leads`` (None: the encoder's own order, ``spec.leads``). Leads are reordered by name
    (case-insensitive, usual aliases), then the signal is resampled with ``prepare``'s filter
    (:func:`ecg_ray.data.signal.resample`: scipy polyphase, antireflect ends) and cast to float32,
    as ``prepare`` stores records; the encoder's normalisation is then applied (none for every
    ecg_ray encoder: it was trained on the store's millivolts). Leads the encoder takes but the
    signal lacks raise SignalError listing them, or are zeroed with ``missing_leads="zero"``
    (the default for encoders trained with lead masking). Any length (>= 1 sample).
    """
    array = as_array(signal)
    if array.ndim != 2:
        raise SignalError(f"a recording must be 2-D (time, leads), got shape {tuple(array.shape)}")
    if array.dtype.kind not in "fiub":
        raise SignalError(f"signal has non-numeric dtype {array.dtype}")
    leads = list(spec.leads) if leads is None else [str(name) for name in leads]
    if array.shape[1] != len(leads):
        flipped = array.shape[0] == len(leads) and array.shape[1] != len(leads)
        hint = ("; it looks like (leads, time): ecg_ray takes (time, leads), pass signal.T" if flipped else "")
        raise SignalError(f"signal shape {tuple(array.shape)} does not match {len(leads)} lead names "
                          f"(time, leads){hint}")
    if array.shape[0] == 0:
        raise SignalError("signal is empty (0 samples)")
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise SignalError(f"sampling rate {fs!r} is not a number") from None
    if not (MIN_FS <= fs <= MAX_FS):
        raise SignalError(f"sampling rate {fs} Hz is implausible for an ECG (expected {MIN_FS:g}-{MAX_FS:g} Hz)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise SignalError(f"signal has {bad} NaN or inf sample(s); fill or cut them first")
    columns = lead_columns(leads, spec, missing_leads)
    present = [c for c in columns if c is not None]
    resampled = resample(np.asarray(array[:, present], dtype=np.float64), fs, spec.fs)
    out = np.zeros((resampled.shape[0], len(columns)), dtype=np.float32)
    out[:, [k for k, c in enumerate(columns) if c is not None]] = resampled
    return normalize(out, spec)


def normalize(signal: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The encoder's input normalisation of a prepared (time, leads) float32 signal: none (see spec)."""
    if spec.normalization != NORMALIZATION_NONE:
        raise SignalError(f"normalization {spec.normalization!r} is not one this ecg_ray applies")
    return signal


def window_starts(length: int, spec: InputSpec) -> np.ndarray:
    """Starts of the evaluation windows of a record of ``length`` samples at ``spec.fs``.

    The rule of :func:`ecg_ray.data.windows.window_counts` (that module reads stores, so it is not
    imported here): window k starts at k * stride, (length - window) // stride + 1 windows;
    ``window`` 0 is the whole record. A record shorter than one window raises SignalError.
    """
    if length < spec.min_samples:
        raise SignalError(f"record of {length / spec.fs:.2f} s is shorter than one window of the encoder: records need "
                          f"at least {spec.window / spec.fs:.2f} s ({spec.window} samples at {spec.fs:g} Hz; "
                          f"shorter ones are not padded)")
    if spec.window == 0:
        return np.zeros(1, dtype=np.int64)
    return np.arange((length - spec.window) // spec.stride + 1, dtype=np.int64) * spec.stride


def record_windows(prepared: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(n_windows, leads, window) float32 windows of one prepared (time, leads) record."""
    width = spec.window if spec.window > 0 else prepared.shape[0]
    starts = window_starts(prepared.shape[0], spec)
    channels_first = np.ascontiguousarray(prepared.T)
    return np.stack([channels_first[:, s:s + width] for s in starts.tolist()]).astype(np.float32, copy=False)
