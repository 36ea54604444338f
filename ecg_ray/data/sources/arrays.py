"""Bring-your-own data: one ``.npy`` or ``.zarr`` array of N records plus an optional CSV.

The array is (N, T, 12) ("NTC") or (N, 12, T) ("NCT") in millivolts at one sampling rate
``fs``; ``layout="auto"`` picks the axis of size 12. ``.npy`` files are memory-mapped and zarr
arrays (v2 or v3) are read one record at a time, so arrays larger than memory work. Signals
are kept as given: trailing zeros are not stripped, since we cannot tell padding from data.

The optional CSV has one row per record, in array order (format in
:mod:`ecg_ray.data.sources.label_table`, shared with ``prepare wfdb``): ``id`` (else the row
index), ``labels`` and/or ``label_<name>`` one-hot columns, ``fold`` and ``patient_id`` when
known (else ``stable_fold`` of the patient / record), any other column as metadata.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ecg_ray.data.signal import CANONICAL_LEADS, MAX_FS, MIN_FS, canonical_lead_name, standardize
from ecg_ray.data.sources.base import Record, Source, stable_fold
from ecg_ray.data.sources.label_table import load_csv, read_label_table
from ecg_ray.errors import RecordError, SourceError


class ArraySource(Source):
    """Reader for an (N, T, 12) / (N, 12, T) ``.npy`` or ``.zarr`` array at ``fs`` Hz."""

    kind = "array"

    def __init__(self, path: str | Path, fs: float, labels_csv: str | Path | None = None,
                 layout: str = "auto", leads: list[str] | None = None, fs_out: float = 100.0,
                 dataset: str = "custom"):
        super().__init__(fs_out)
        self.path = Path(path)
        self.dataset = str(dataset)
        try:
            self.fs = float(fs)
        except (TypeError, ValueError):
            raise SourceError(f"{self.path}: sampling rate {fs!r} is not a number") from None
        # Checked once here: a wrong rate would otherwise fail every record separately.
        if not (MIN_FS <= self.fs <= MAX_FS):
            raise SourceError(f"{self.path}: implausible sampling rate {self.fs} Hz "
                              f"(expected {MIN_FS}-{MAX_FS})")
        self.leads = self._check_leads(leads)
        self.format = self._detect_format()
        self._array: Any = None
        self._pid = os.getpid()

        shape = tuple(int(n) for n in self._open().shape)
        self._array = None  # opened again lazily in each reader process
        if len(shape) != 3:
            raise SourceError(f"{self.path}: array has shape {shape}, expected (N, T, 12) or (N, 12, T)")
        self.shape = shape
        self.layout = self._resolve_layout(layout, shape)
        self.n_records = shape[0]
        self.n_samples = shape[1] if self.layout == "NTC" else shape[2]

        self.labels_csv = Path(labels_csv) if labels_csv is not None else None
        self._ids = [str(i) for i in range(self.n_records)]
        self._labels: list[list[str]] = [[] for _ in range(self.n_records)]
        self._label_columns: list[str] | None = None
        self._has_label_text = False
        self._folds: list[int | None] = [None] * self.n_records
        self._patients: list[str | None] = [None] * self.n_records
        self._extra: dict[str, list[Any]] = {}
        if self.labels_csv is not None:
            self._load_csv(self.labels_csv)

    # -- setup ---------------------------------------------------------------------------------

    def _check_leads(self, leads: list[str] | None) -> list[str]:
        if leads is None:
            return list(CANONICAL_LEADS)
        leads = [str(lead) for lead in leads]
        canon = [canonical_lead_name(lead) for lead in leads]
        problems = []
        if len(leads) != len(CANONICAL_LEADS):
            problems.append(f"{len(leads)} lead names given, 12 needed")
        if any(c is None for c in canon):
            unknown = [lead for lead, c in zip(leads, canon, strict=True) if c is None]
            problems.append(f"unknown lead name(s) {unknown}")
        elif len(set(canon)) != len(canon):
            problems.append("duplicate lead names")
        if problems:
            raise SourceError(f"{self.path}: bad leads {leads}: {'; '.join(problems)}")
        return leads

    def _detect_format(self) -> str:
        if not self.path.exists():
            raise SourceError(f"{self.path}: not found")
        if self.path.suffix.lower() == ".npy" and self.path.is_file():
            return "npy"
        is_zarr_dir = self.path.is_dir() and any(
            (self.path / marker).exists() for marker in ("zarr.json", ".zarray"))
        if self.path.suffix.lower() == ".zarr" or is_zarr_dir:
            return "zarr"
        raise SourceError(f"{self.path}: expected a .npy file or a .zarr array")

    def _open(self):
        # Handles are per process: a memmap or store inherited through fork is reopened.
        if self._array is not None and self._pid == os.getpid():
            return self._array
        try:
            if self.format == "npy":
                array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            else:
                import zarr

                array = zarr.open_array(str(self.path), mode="r")
        except Exception as exc:
            raise SourceError(f"{self.path}: cannot open {self.format} array "
                              f"({type(exc).__name__}: {exc})") from None
        self._array, self._pid = array, os.getpid()
        return array

    def _resolve_layout(self, layout: str, shape: tuple[int, ...]) -> str:
        layout = str(layout).upper()
        if layout == "AUTO":
            if shape[1] == 12 and shape[2] == 12:
                raise SourceError(f"{self.path}: shape {shape} is ambiguous (both axes have 12 entries); "
                                  "pass --layout NTC (records, time, leads) or NCT (records, leads, time)")
            if shape[2] == 12:
                return "NTC"
            if shape[1] == 12:
                return "NCT"
            raise SourceError(f"{self.path}: shape {shape} has no axis of 12 leads")
        if layout not in ("NTC", "NCT"):
            raise SourceError(f"{self.path}: layout must be auto, NTC or NCT, got {layout!r}")
        lead_axis = 2 if layout == "NTC" else 1
        if shape[lead_axis] != 12:
            raise SourceError(f"{self.path}: layout {layout} puts {shape[lead_axis]} leads on axis "
                              f"{lead_axis} of shape {shape}, expected 12")
        return layout

    def _load_csv(self, csv: Path) -> None:
        table = load_csv(csv)
        if len(table) != self.n_records:
            raise SourceError(f"{csv}: {len(table)} rows but {self.path} holds {self.n_records} records "
                              "(the CSV needs one row per record, in array order)")
        parsed = read_label_table(table, csv)
        if parsed.ids is not None:
            self._ids = parsed.ids
        self._labels = parsed.labels
        self._label_columns = parsed.label_columns
        self._has_label_text = parsed.has_label_text
        self._folds = parsed.folds
        self._patients = parsed.patients
        self._extra = parsed.extra

    # -- pickling: never ship an open memmap / zarr handle -------------------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    # -- Source interface ----------------------------------------------------------------------

    def refs(self) -> list[int]:
        return list(range(self.n_records))

    def ref_id(self, ref: int) -> tuple[str, str]:
        return self._ids[ref], str(self.path)

    def label_names(self) -> list[str] | None:
        # Fixed only when every label comes from a one-hot column; free-text labels are open-ended.
        if self._label_columns is not None and not self._has_label_text:
            return list(self._label_columns)
        return None

    def read(self, ref: int) -> Record:
        index = int(ref)
        record_id, file = self._ids[index], str(self.path)
        try:
            raw = np.asarray(self._open()[index])
        except SourceError as exc:
            raise RecordError(record_id, file, str(exc)) from None
        except Exception as exc:
            raise RecordError(record_id, file,
                              f"cannot read record {index} ({type(exc).__name__}: {exc})") from None
        if self.layout == "NCT":
            raw = raw.T
        signal = standardize(raw, self.fs, self.leads, self.fs_out, record_id, file)
        patient_id = self._patients[index] or record_id
        fold = self._folds[index]
        metadata: dict[str, Any] = {
            "fold": fold if fold is not None else stable_fold(patient_id),
            "patient_id": patient_id,
        }
        for column, values in self._extra.items():
            metadata[column] = values[index]
        return Record(id=record_id, dataset=self.dataset, file=file, signal=signal, fs=self.fs_out,
                      fs_original=self.fs, labels=list(self._labels[index]), metadata=metadata)

    def describe(self) -> dict:
        return {"kind": self.kind, "dataset": self.dataset, "path": str(self.path), "format": self.format,
                "fs": self.fs, "layout": self.layout, "shape": list(self.shape), "leads": list(self.leads),
                "labels_csv": str(self.labels_csv) if self.labels_csv is not None else None}
