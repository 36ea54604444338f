"""CODE-15% (Ribeiro et al., Zenodo record 4916206): HDF5 tracings + ``exams.csv``.

Layout: ``exams_part0.hdf5`` ... ``exams_part17.hdf5``, each holding ``tracings`` (N, 4096, 12)
float32 at 400 Hz in the lead order I, II, III, aVR, aVL, aVF, V1-V6, and ``exam_id`` (N,);
``exams.csv`` has one row per exam with the six labels (``1dAVb, RBBB, LBBB, SB, ST, AF``) and
age / is_male / patient_id / trace_file / normal_ecg / death / timey.

Units: the tracings are taken to be millivolts. The dataset README says "1e-4 V" and, in the
same sentence, "multiply by 1000 to obtain V", which contradict each other; the PhysioNet 2025
challenge's official ``prepare_code15_data.py`` writes them to WFDB as ``mV`` unchanged, and
the values have mV amplitudes (QRS about 1), so we follow that.

Exams are 7 s (2800 samples) or 10 s (4000 samples) zero-padded symmetrically to 4096; the
padding is removed so every record keeps its true length.

A reference is ``(file_index, row_index)``: one row is sliced out of the HDF5 dataset per read,
never the whole file. Folds come from ``stable_fold(patient_id)`` (the dataset has no folds),
so all exams of a patient share a fold. ``sex`` uses PTB-XL's coding (0 male, 1 female,
-1 unknown) so the two sources fill one Parquet column consistently.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecg_ray.data.signal import standardize
from ecg_ray.data.sources.base import Record, Source, stable_fold
from ecg_ray.errors import RecordError, SourceError

CODE15_FS = 400.0
CODE15_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CODE15_LABELS: tuple[str, ...] = ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF")
# True exam lengths in samples at 400 Hz (7 s and 10 s).
_TRUE_LENGTHS = (2800, 4000)
_PART_RE = re.compile(r"exams_part(\d+)\.hdf5$")


class Code15Source(Source):
    """Reader for CODE-15%: ``path`` is the directory of ``exams_part*.hdf5`` + ``exams.csv``,
    or one ``.hdf5`` file (with ``exams_csv`` given or an ``exams.csv`` beside it)."""

    kind = "code15"

    def __init__(self, path: str | Path, fs_out: float = 100.0, exams_csv: str | Path | None = None):
        super().__init__(fs_out)
        self.path = Path(path)
        if self.path.is_dir():
            parts = [p for p in self.path.iterdir() if _PART_RE.search(p.name)]
            if not parts:
                raise SourceError(f"{self.path}: no exams_part*.hdf5 files (is this the CODE-15% directory?)")
            # Numeric order (part2 before part10) so refs are stable and read naturally.
            self.files = sorted(parts, key=lambda p: int(_PART_RE.search(p.name).group(1)))
            csv = Path(exams_csv) if exams_csv is not None else self.path / "exams.csv"
        elif self.path.is_file():
            self.files = [self.path]
            csv = Path(exams_csv) if exams_csv is not None else self.path.parent / "exams.csv"
        else:
            raise SourceError(f"{self.path}: not found (expected a CODE-15% directory or .hdf5 file)")
        if not csv.is_file():
            raise SourceError(f"{csv}: exams.csv not found (pass exams_csv= to point at it)")
        self.exams_csv = csv
        # Read only the header now: the full table (345k rows) is loaded lazily in each process,
        # so it is not pickled along with the source to every reader.
        try:
            columns = list(pd.read_csv(csv, nrows=0).columns)
        except Exception as exc:
            raise SourceError(f"{csv}: unreadable CSV ({exc})") from None
        missing = [c for c in ("exam_id", *CODE15_LABELS) if c not in columns]
        if missing:
            raise SourceError(f"{csv}: column(s) {missing} missing")
        self._exams: pd.DataFrame | None = None
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    # -- pickling: drop the lazily built table and open HDF5 handles --------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_exams"] = None
        state["_handles"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def close(self) -> None:
        """Close HDF5 files this process opened (reads reopen them on demand)."""
        for handle in self._handles.values():
            try:
                handle.close()
            except Exception:  # closing is best effort; the handle may already be invalid
                pass
        self._handles = {}

    def _h5(self, file_index: int):
        import h5py

        # A handle inherited through fork is not safe to use in the child: reopen per process.
        if self._pid != os.getpid():
            self._handles = {}
            self._pid = os.getpid()
        handle = self._handles.get(file_index)
        if handle is None:
            handle = h5py.File(self.files[file_index], "r")
            self._handles[file_index] = handle
        return handle

    def _table(self) -> pd.DataFrame:
        if self._exams is None:
            try:
                table = pd.read_csv(self.exams_csv)
            except Exception as exc:
                raise SourceError(f"{self.exams_csv}: unreadable CSV ({exc})") from None
            table = table.drop_duplicates(subset="exam_id", keep="first")
            try:
                table.index = pd.Index(table["exam_id"].astype("int64"))
            except (TypeError, ValueError):
                raise SourceError(f"{self.exams_csv}: exam_id column is not all integers") from None
            self._exams = table
        return self._exams

    # -- Source interface -----------------------------------------------------------------------

    def refs(self) -> list[tuple[int, int]]:
        import h5py

        refs: list[tuple[int, int]] = []
        for index, file in enumerate(self.files):
            try:
                # Only shapes are needed here; the file is closed again before any read.
                with h5py.File(file, "r") as handle:
                    shape, n_ids = handle["tracings"].shape, handle["exam_id"].shape[0]
            except KeyError as exc:
                raise SourceError(f"{file}: dataset missing ({exc}); "
                                  "expected 'tracings' and 'exam_id'") from None
            except Exception as exc:
                raise SourceError(f"{file}: unreadable HDF5 ({type(exc).__name__}: {exc})") from None
            if len(shape) != 3 or shape[2] != len(CODE15_LEADS):
                raise SourceError(f"{file}: 'tracings' has shape {shape}, expected (N, samples, 12)")
            if n_ids != shape[0]:
                raise SourceError(f"{file}: {n_ids} exam_id values for {shape[0]} tracings")
            refs.extend((index, row) for row in range(shape[0]))
        return refs

    def ref_id(self, ref: tuple[int, int]) -> tuple[str, str]:
        file_index, row = ref
        file = str(self.files[file_index])
        try:
            return str(int(self._h5(file_index)["exam_id"][row])), file
        except Exception:  # only used to report another failure; fall back to the position
            return f"{Path(file).name}[{row}]", file

    def label_names(self) -> list[str]:
        return list(CODE15_LABELS)

    def read(self, ref: tuple[int, int]) -> Record:
        file_index, row = ref
        file = str(self.files[file_index])
        record_id = f"{Path(file).name}[{row}]"
        try:
            handle = self._h5(file_index)
            record_id = str(int(handle["exam_id"][row]))
            # Slicing one row reads only that exam from disk.
            raw = np.asarray(handle["tracings"][row])
        except Exception as exc:
            raise RecordError(record_id, file,
                              f"cannot read HDF5 row {row} ({type(exc).__name__}: {exc})") from None

        table = self._table()
        exam_id = int(record_id)
        position = table.index.get_indexer([exam_id])[0]
        if position < 0:
            raise RecordError(record_id, file, f"exam_id {exam_id} not listed in {self.exams_csv}")
        info = table.iloc[position]

        labels = []
        for name in CODE15_LABELS:
            value = _as_bool(info[name])
            if value is None:
                raise RecordError(record_id, file,
                                  f"label {name!r} is {info[name]!r} in {self.exams_csv}, not a boolean")
            if value:
                labels.append(name)

        trimmed = strip_padding(raw, record_id, file)
        signal = standardize(trimmed, CODE15_FS, list(CODE15_LEADS), self.fs_out, record_id, file)

        patient = info.get("patient_id")
        if _is_number(patient):
            patient_id = str(int(patient))
        else:
            patient_id = str(patient) if _present(patient) else record_id
        metadata: dict[str, Any] = {
            "fold": stable_fold(patient_id),
            "patient_id": patient_id,
            "exam_id": exam_id,
            "age": float(info["age"]) if _is_number(info.get("age")) else np.nan,
        }
        if "is_male" in info.index:
            male = _as_bool(info["is_male"])
            metadata["sex"] = -1 if male is None else (0 if male else 1)
        if "trace_file" in info.index:
            metadata["trace_file"] = str(info["trace_file"]) if _present(info["trace_file"]) else ""
        for column in ("normal_ecg", "death"):
            if column in info.index:
                flag = _as_bool(info[column])
                metadata[column] = -1 if flag is None else int(flag)
        if "timey" in info.index:
            metadata["timey"] = float(info["timey"]) if _is_number(info["timey"]) else np.nan
        return Record(id=record_id, dataset="code15", file=file, signal=signal, fs=self.fs_out,
                      fs_original=CODE15_FS, labels=labels, metadata=metadata)

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "files": [p.name for p in self.files],
                "exams_csv": str(self.exams_csv)}


def strip_padding(raw: np.ndarray, record_id: str, file: str) -> np.ndarray:
    """Remove the symmetric zero padding around one (4096, 12) exam.

    Rows where all leads are exactly 0 are padding. When the non-zero span fits inside the
    centred window of a known exam length (2800 or 4000 samples) that window is returned, so a
    genuine all-zero sample at an exam's edge does not shorten it; otherwise the span itself.
    """
    if raw.ndim != 2:
        raise RecordError(record_id, file, f"tracing has shape {raw.shape}, expected (samples, 12)")
    # NaN != 0 is True, so NaN rows count as content and are rejected later by standardize().
    nonzero = np.flatnonzero(np.any(raw != 0, axis=1))
    if nonzero.size == 0:
        raise RecordError(record_id, file, "tracing is all zeros (empty exam)")
    first, last = int(nonzero[0]), int(nonzero[-1]) + 1
    total = raw.shape[0]
    for length in _TRUE_LENGTHS:
        if length > total:
            continue
        start = (total - length) // 2
        if start <= first and last <= start + length:
            return raw[start:start + length]
    return raw[first:last]


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and value is not pd.NA


def _is_number(value: Any) -> bool:
    if not _present(value) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def _as_bool(value: Any) -> bool | None:
    """Booleans as pandas reads them from exams.csv (bool, 0/1 or 'True'/'False'); None if not one."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if _is_number(value) and float(value) in (0.0, 1.0):
        return bool(float(value))
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "t", "yes", "1"):
            return True
        if text in ("false", "f", "no", "0"):
            return False
    return None
