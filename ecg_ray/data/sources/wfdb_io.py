"""Reading one WFDB record (.hea + .dat/.mat) with the checks the header allows.

PTB-XL and the PhysioNet/CinC challenges both ship WFDB records. Their headers carry the
signal length, ADC gain, baseline, initial values and a per-lead checksum, so a corrupt or
truncated data file, or a header that disagrees with its data, is detected here rather than
silently stored.

Header comments carry per-record facts in two spellings: ``# Age: 54`` / ``# Sex: Female`` (PTB-XL,
the CinC challenges) and ``# <age>: 65 <sex>: M <diagnoses> ...`` (INCART, several older PhysioNet
databases, several keys on one line). :func:`parse_comments` reads both; :func:`header_demographics`
turns age and sex into the store's columns, coded as every reader codes them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

from ecg_ray.errors import RecordError

# "Key: value" (one per line) and "<key>: value <key2>: value" (several per line, colon optional).
_PLAIN_COMMENT = re.compile(r"\s*#?\s*([A-Za-z]+)\s*:\s*(.*)$")
_BRACKETED_COMMENT = re.compile(r"<\s*([A-Za-z][A-Za-z _-]*?)\s*>\s*:?\s*([^<]*)")
# An age as headers write it: "54", "54.5", "54 years", "54y"; anything else (NaN, Unknown, ?) is missing.
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:y|yr|yrs|years?)?", re.IGNORECASE)
# PTB-XL's coding, used by every reader's ``sex`` column: 0 male, 1 female, -1 unknown.
SEX_CODES = {"male": 0, "m": 0, "female": 1, "f": 1}
UNKNOWN_SEX = -1

# Scale factors to millivolts for the units seen in WFDB headers.
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3, "nu": 1.0, "": 1.0}


def read_wfdb(record_path: str | Path, record_id: str) -> tuple[np.ndarray, float, list[str], list[str]]:
    """Return (signal in mV as float64 (time, leads), fs, lead names, header comments).

    ``record_path`` is the path without extension. Raises RecordError naming the file on any
    problem: missing or unreadable files, truncated data, header/data disagreement (length,
    initial value, checksum), invalid samples or unknown units.
    """
    record_path = Path(record_path)
    header_file = str(record_path) + ".hea"
    if not Path(header_file).exists():
        raise RecordError(record_id, header_file, "header file not found")
    try:
        header = wfdb.rdheader(str(record_path))
    except Exception as exc:  # wfdb raises many types for malformed headers
        raise RecordError(record_id, header_file, f"unreadable header: {exc}") from None
    if isinstance(header, wfdb.MultiRecord) or getattr(header, "seg_name", None):
        # A multi-segment record is a list of other records (possibly with gaps and layout
        # segments that change the lead set); one record in the store is one continuous signal.
        segments = len(header.seg_name or [])
        raise RecordError(record_id, header_file, f"multi-segment record ({segments} segments) is not "
                          "supported: prepare its segments as single records")
    data_files = sorted(set(header.file_name or []))
    if not data_files:
        raise RecordError(record_id, header_file, "header lists no signal file")
    data_file = str(record_path.parent / data_files[0])
    if not Path(data_file).exists():
        raise RecordError(record_id, data_file, "signal file named in the header not found")
    _check_file_size(header, data_file, record_id)
    try:
        record = wfdb.rdrecord(str(record_path), physical=False)
    except Exception as exc:
        raise RecordError(record_id, data_file, f"cannot read signal data ({type(exc).__name__}: {exc})") from None
    digital = record.d_signal
    if digital is None or digital.ndim != 2 or digital.shape[0] == 0:
        raise RecordError(record_id, data_file, "no samples in signal file")
    if header.sig_len and digital.shape[0] != header.sig_len:
        raise RecordError(
            record_id, data_file,
            f"truncated: header says {header.sig_len} samples, file holds {digital.shape[0]}",
        )
    if digital.shape[1] != header.n_sig:
        raise RecordError(record_id, data_file,
                          f"header says {header.n_sig} leads, file holds {digital.shape[1]}")
    _check_against_header(record, digital, record_id, data_file)
    gains = np.asarray(record.adc_gain, dtype=np.float64)
    if np.any(gains == 0) or not np.all(np.isfinite(gains)):
        raise RecordError(record_id, header_file, f"invalid ADC gain(s) {list(record.adc_gain)}")
    scale = []
    for unit in record.units or [""] * digital.shape[1]:
        factor = _TO_MV.get(str(unit).strip().lower())
        if factor is None:
            raise RecordError(record_id, header_file, f"unknown signal unit {unit!r}")
        scale.append(factor)
    signal = (digital - np.asarray(record.baseline, dtype=np.float64)) / gains * np.asarray(scale)
    return signal, float(record.fs), list(record.sig_name), list(record.comments or [])


def parse_comments(comments: list[str]) -> dict[str, str]:
    """Header comment lines as ``{key: value}`` (keys lower-case, values stripped).

    ``Age: 54`` and ``<age>: 54 <sex>: M`` give the same keys; for a key given twice the last wins.
    """
    out: dict[str, str] = {}
    for line in comments:
        pairs = _BRACKETED_COMMENT.findall(line)
        if not pairs:
            match = _PLAIN_COMMENT.match(line)
            pairs = [match.groups()] if match else []
        for key, value in pairs:
            out[key.strip().lower()] = value.strip()
    return out


def header_demographics(info: dict[str, str]) -> dict[str, Any]:
    """``age`` (float years, NaN when absent or unreadable) and ``sex`` (0/1, -1 unknown) of parsed comments."""
    return {"age": parse_age(info.get("age", "")), "sex": SEX_CODES.get(info.get("sex", "").strip().lower(),
                                                                         UNKNOWN_SEX)}


def parse_age(text: str) -> float:
    """Years as a float; NaN for "NaN", "Unknown", negative or empty ages (never an error)."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        return math.nan
    return float(match.group(1))


def _check_against_header(record, digital: np.ndarray, record_id: str, data_file: str) -> None:
    """Compare data with the header's initial values and 16-bit checksums, where given."""
    invalid = _invalid_sample_value(record.fmt)
    if invalid is not None and np.any(digital == invalid):
        n = int(np.sum(digital == invalid))
        raise RecordError(record_id, data_file, f"{n} missing/invalid sample(s) (value {invalid})")
    if record.init_value is not None:
        init = np.asarray(record.init_value)
        if init.shape[0] == digital.shape[1] and np.any(digital[0] != init):
            raise RecordError(record_id, data_file, "first samples disagree with the header's initial values")
    if record.checksum is not None:
        expected = np.asarray(record.checksum, dtype=np.int64) % 65536
        actual = digital.astype(np.int64).sum(axis=0) % 65536
        if expected.shape == actual.shape and np.any(expected != actual):
            bad = [record.sig_name[i] for i in np.flatnonzero(expected != actual)]
            raise RecordError(record_id, data_file, f"checksum mismatch in lead(s) {bad}: data corrupt")


# Bytes per sample of the WFDB storage formats we check by size (212 packs 2 samples in 3 bytes).
_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "61": 2, "80": 1, "160": 2, "212": 1.5, "24": 3, "32": 4}


def _check_file_size(header, data_file: str, record_id: str) -> None:
    """A data file shorter or longer than the header implies is truncated or disagrees with it."""
    if len(set(header.file_name)) != 1 or not header.sig_len:
        return  # multi-file records: let the reader check
    fmts = [str(f) for f in header.fmt]
    if any(f not in _BYTES_PER_SAMPLE for f in fmts):
        return
    frames = header.samps_per_frame or [1] * len(fmts)
    per_frame = sum(_BYTES_PER_SAMPLE[f] * n for f, n in zip(fmts, frames, strict=True))
    offset = (header.byte_offset or [0])[0] or 0
    expected = int(offset + per_frame * header.sig_len + 0.5)
    actual = Path(data_file).stat().st_size
    if actual < expected:
        held = int(max(0, actual - offset) // per_frame)
        raise RecordError(record_id, data_file, f"truncated: header says {header.sig_len} samples "
                          f"({expected} bytes), file holds {held} ({actual} bytes)")
    if actual > expected:
        raise RecordError(record_id, data_file, f"header disagrees with data: header implies {expected} "
                          f"bytes ({header.sig_len} samples x {header.n_sig} leads), file has {actual}")


def _invalid_sample_value(fmts) -> int | None:
    """WFDB marks missing samples with the most negative value of the storage format."""
    fmt = str((fmts or ["16"])[0])
    return {"16": -32768, "61": -32768, "80": -128, "212": -2048, "24": -(2**23), "32": -(2**31)}.get(fmt)
