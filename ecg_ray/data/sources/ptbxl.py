"""PTB-XL (Wagner et al. 2020) as released on PhysioNet: records100/ or records500/ + two CSVs.

Labels are the 71 SCP statements of ``scp_statements.csv`` in that file's row order (stable
across runs, unlike a Python set), taken from ``scp_codes`` at any likelihood as in the
benchmark papers. The diagnostic / form / rhythm views are subsets of those 71 columns; the
diagnostic subclass (23) and superclass (5) views are extra columns ``sub:X`` / ``super:X``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from ecg_ray.data.signal import standardize
from ecg_ray.data.sources.base import Record, Source
from ecg_ray.data.sources.wfdb_io import read_wfdb
from ecg_ray.errors import RecordError, SourceError

SUBCLASS_PREFIX = "sub:"
SUPERCLASS_PREFIX = "super:"


class PtbxlSource(Source):
    """Reader for a PTB-XL directory. ``rate`` picks records100 (100) or records500 (500)."""

    kind = "ptbxl"

    def __init__(self, root: str | Path, rate: int = 100, fs_out: float = 100.0):
        super().__init__(fs_out)
        self.root = Path(root)
        if rate not in (100, 500):
            raise SourceError(f"PTB-XL rate must be 100 or 500, got {rate}")
        self.rate = rate
        db_file = self.root / "ptbxl_database.csv"
        scp_file = self.root / "scp_statements.csv"
        for f in (db_file, scp_file):
            if not f.exists():
                raise SourceError(f"{f}: not found (is {self.root} a PTB-XL directory?)")
        try:
            self.db = pd.read_csv(db_file, index_col="ecg_id")
            self.scp = pd.read_csv(scp_file, index_col=0)
        except Exception as exc:
            raise SourceError(f"{db_file} or {scp_file}: unreadable CSV ({exc})") from None
        column = "filename_lr" if rate == 100 else "filename_hr"
        for needed in ("scp_codes", "strat_fold", "patient_id", column):
            if needed not in self.db.columns:
                raise SourceError(f"{db_file}: column {needed!r} missing")
        self.filename_column = column
        self.statements = [str(s) for s in self.scp.index]

    def refs(self) -> list[int]:
        return [int(i) for i in self.db.index]

    def ref_id(self, ref: int) -> tuple[str, str]:
        return str(ref), str(self.root / f"{self.db.at[ref, self.filename_column]}.hea")

    def label_names(self) -> list[str]:
        return list(self.statements)

    def label_sets(self) -> dict[str, list[str]]:
        scp = self.scp
        sets = {"all": list(self.statements)}
        for view in ("diagnostic", "form", "rhythm"):
            if view in scp.columns:
                sets[view] = [str(s) for s in scp.index[scp[view].fillna(0).astype(float) == 1]]
        for view, column, prefix in (("subclass", "diagnostic_subclass", SUBCLASS_PREFIX),
                                     ("superclass", "diagnostic_class", SUPERCLASS_PREFIX)):
            if column in scp.columns:
                sets[view] = [prefix + str(v) for v in sorted(scp[column].dropna().unique())]
        return sets

    def extra_label_columns(self, record: Record) -> dict[str, int]:
        """Subclass/superclass columns: 1 when any diagnostic statement of the record maps there."""
        out: dict[str, int] = {}
        for name in record.labels:
            if name not in self.scp.index:
                continue
            row = self.scp.loc[name]
            for column, prefix in (("diagnostic_subclass", SUBCLASS_PREFIX),
                                   ("diagnostic_class", SUPERCLASS_PREFIX)):
                value = row.get(column)
                if isinstance(value, str) and value:
                    out[prefix + value] = 1
        return out

    def read(self, ref: int) -> Record:
        row = self.db.loc[ref]
        record_id = str(ref)
        path = self.root / str(row[self.filename_column])
        header_file = str(path) + ".hea"
        try:
            codes = ast.literal_eval(row["scp_codes"]) if isinstance(row["scp_codes"], str) else {}
        except (ValueError, SyntaxError):
            raise RecordError(record_id, header_file, f"unparseable scp_codes {row['scp_codes']!r}") from None
        labels = [str(code) for code in codes]
        unknown = [code for code in labels if code not in self.scp.index]
        if unknown:
            raise RecordError(record_id, header_file, f"SCP code(s) {unknown} not in scp_statements.csv")
        if not labels:
            raise RecordError(record_id, header_file, "empty label set (no scp_codes)")
        raw, fs, leads, _ = read_wfdb(path, record_id)
        if abs(fs - self.rate) > 1e-6:
            raise RecordError(record_id, header_file, f"header says {fs} Hz, expected {self.rate} Hz")
        signal = standardize(raw, fs, leads, self.fs_out, record_id, header_file)
        metadata = {
            "fold": int(row["strat_fold"]),
            "patient_id": str(int(row["patient_id"])) if pd.notna(row["patient_id"]) else record_id,
            "age": float(row["age"]) if pd.notna(row.get("age")) else np.nan,
            "sex": int(row["sex"]) if pd.notna(row.get("sex")) else -1,
        }
        return Record(id=record_id, dataset="ptbxl", file=header_file, signal=signal, fs=self.fs_out,
                      fs_original=fs, labels=sorted(labels, key=self.statements.index), metadata=metadata)

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.root), "rate": self.rate}
