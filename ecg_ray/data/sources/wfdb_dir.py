"""Any WFDB corpus: every ``.hea`` record under a directory, or the records a ``record_list.csv`` names.

Made for MIMIC-IV-ECG (``files/p1000/p10000032/s40689238/40689238.hea`` + ``record_list.csv``
with ``subject_id, study_id, file_name, ecg_time, path``) and works on any tree of single-segment
WFDB records in the formats the ``wfdb`` package reads (16, 212, 24, 32, 8, 80, ...). Leads are
matched by name in any order and case, any rate is resampled to the store's, as in every reader
(:func:`ecg_ray.data.signal.standardize`).

Which records:
  every ``*.hea`` under the directory, recursively, in the order of their relative paths; or, with
  ``record_list``, the rows of that CSV in its order (a ``path`` column relative to the directory,
  with or without ``.hea``; every other column becomes a metadata column of the store).

Record id:
  the record name (the file stem, ``40689238``). When several records share a stem, each of
  those records is named by its relative path without extension instead (``a/00001``,
  ``b/00001``); the others keep their stem. A stem holds no ``/`` and relative paths are unique,
  so ids are unique.

Patient id, the first rule that gives one:
  1. a ``patient_id`` column of the labels CSV; 2. a ``subject_id`` column (record list or labels
  CSV); 3. the deepest directory of the record's path named ``p<digits>``, as the digits
  (``files/p1000/p10000032/...`` -> ``10000032``, which is MIMIC-IV-ECG's subject_id); 4. the
  record id. Folds are the labels CSV's ``fold`` or else ``stable_fold`` of the patient id, so a
  patient's records share a fold.

Labels (optional ``labels_csv``, the format of ``prepare numpy``, :mod:`.label_table`) are joined
on a ``path`` column (relative path, as in the record list) when it has one, else on ``id``
(the record id above). A record without a row is skipped with that reason (an all-zero label row
would claim it negative for everything); rows that match no record are counted in the manifest's
source entry and logged.

Age and sex: from the header comments when present (``# Age: 54``, ``# Sex: Female``/``M``, or
``# <age>: 54 <sex>: F``; :func:`~ecg_ray.data.sources.wfdb_io.parse_comments`), as the ``age``
(float years) and ``sex`` (0 male, 1 female) columns that the PTB-XL and CinC readers write; a
header without them gives NaN and -1, never an error. A record-list or labels-CSV column named
``age`` or ``sex`` wins over the headers, cell for cell as the CSV has it (an empty cell stays
empty: one column keeps one type).

Dataset: every record's ``dataset`` column is ``dataset`` (``--dataset``, default ``wfdb``), the
name exclusions (``--exclude-datasets``) and the store's per-dataset counts use.

Multi-segment records are refused per record with the reason (``read_wfdb``).

Scale: the per-record facts (path, id, patient, fold, labels, metadata) travel in each reference,
not in the source object, so a reader process receives a small source plus one small reference
per record whatever the corpus size; the directory is scanned once, in the driver.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from ecg_ray.data.signal import standardize
from ecg_ray.data.sources.base import Record, Source, stable_fold
from ecg_ray.data.sources.label_table import LabelTable, load_csv, plain, read_label_table, unique_text
from ecg_ray.data.sources.wfdb_io import header_demographics, parse_comments, read_wfdb
from ecg_ray.errors import RecordError, SourceError

logger = logging.getLogger(__name__)

_PATIENT_DIR = re.compile(r"p(\d+)")
# Columns every store's records.parquet has: a record-list column of that name would overwrite them.
_STORE_COLUMNS = {"record_index", "id", "dataset", "file", "offset", "length", "fs_original", "fold", "patient_id",
                  "path"}


class WfdbRef(NamedTuple):
    """Everything known about one record before its files are read (small, picklable, hashable)."""

    path: str                        # relative to the root, POSIX, without ".hea"
    id: str
    patient_id: str
    fold: int
    labels: tuple[str, ...]
    metadata: tuple[Any, ...]        # values of the source's metadata columns (names kept once, in the source)
    problem: str | None = None       # why the record must be skipped before reading (no labels row)


def normalize_record_path(text: str) -> str:
    """``./files/p1/x.hea`` -> ``files/p1/x``: how record-list and labels-CSV paths are compared."""
    text = str(text).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    if text.endswith(".hea"):
        text = text[: -len(".hea")]
    return text


def patient_from_path(path: str) -> str | None:
    """The digits of the deepest directory named ``p<digits>`` (MIMIC-IV-ECG's subject_id), else None."""
    for part in reversed(path.split("/")[:-1]):  # str.split: 10x faster than PurePosixPath at 1M paths
        match = _PATIENT_DIR.fullmatch(part)
        if match:
            return match.group(1)
    return None


def record_ids(paths: list[str]) -> list[str]:
    """The file stem of each path, or the whole relative path for stems that occur more than once."""
    stems = [p.rsplit("/", 1)[-1] for p in paths]
    counts = Counter(stems)
    return [path if counts[stem] > 1 else stem for path, stem in zip(paths, stems, strict=True)]


class WfdbSource(Source):
    """Reader for a directory tree of WFDB records (see the module docstring for every rule)."""

    kind = "wfdb"

    def __init__(self, root: str | Path, record_list: str | Path | None = None,
                 labels_csv: str | Path | None = None, fs_out: float = 100.0, dataset: str = "wfdb"):
        super().__init__(fs_out)
        self.dataset = check_dataset_name(dataset)
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: not a directory")
        self.record_list = Path(record_list) if record_list is not None else None
        self.labels_csv = Path(labels_csv) if labels_csv is not None else None
        self._label_names: list[str] | None = None
        self.unmatched_label_rows = 0
        self._columns: tuple[str, ...] = ()
        self._refs: list[WfdbRef] | None = None
        self._refs = self._build_refs()

    # -- listing (driver only) ------------------------------------------------------------------

    def _build_refs(self) -> list[WfdbRef]:
        if self.record_list is not None:
            paths, listed = self._read_record_list(self.record_list)
        else:
            paths = sorted(h.relative_to(self.root).with_suffix("").as_posix() for h in self.root.rglob("*.hea"))
            listed = {}
            if not paths:
                raise SourceError(f"no .hea files under {self.root}")
        ids = record_ids(paths)
        labels = self._read_labels(paths, ids) if self.labels_csv is not None else None
        self._columns = (*listed, *(c for c in (labels[0].extra if labels else {}) if c not in listed))
        missing = float("nan")
        refs = []
        for i, (path, record_id) in enumerate(zip(paths, ids, strict=True)):
            metadata = {column: values[i] for column, values in listed.items()}
            patient = fold = None
            record_labels: list[str] = []
            problem = None
            if labels is not None:
                table, rows = labels
                row = rows[i]
                if row is None:
                    problem = f"no row for this record in labels CSV {self.labels_csv}"
                else:
                    record_labels = table.labels[row]
                    metadata.update(table.metadata(row))
                    patient, fold = table.patients[row], table.folds[row]
            patient = patient or _text(metadata.get("subject_id")) or patient_from_path(path) or record_id
            refs.append(WfdbRef(path=path, id=record_id, patient_id=patient,
                                fold=fold if fold is not None else stable_fold(patient),
                                labels=tuple(record_labels),
                                metadata=tuple(metadata.get(c, missing) for c in self._columns), problem=problem))
        return refs

    def _read_record_list(self, csv: Path) -> tuple[list[str], dict[str, list[Any]]]:
        table = load_csv(csv, text_columns=("path", "subject_id"), what="record list")
        if "path" not in table.columns:
            raise SourceError(f"{csv}: record list needs a 'path' column (record paths relative to {self.root})")
        if table.empty:
            raise SourceError(f"{csv}: record list has no rows")
        paths = [normalize_record_path(p) for p in unique_text(table["path"], csv, "path")]
        for row, path in enumerate(paths):
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise SourceError(f"{csv}: row {row}: path {path!r} must be relative to {self.root} "
                                  "and stay inside it")
        if len(set(paths)) != len(paths):
            duplicated = sorted(p for p, n in Counter(paths).items() if n > 1)
            raise SourceError(f"{csv}: duplicate path(s) {duplicated[:5]}")
        clash = sorted((set(table.columns) - {"path"}) & _STORE_COLUMNS)
        if clash:
            raise SourceError(f"{csv}: column(s) {clash} would replace the store's own record columns; rename "
                              "them (patient ids and folds come from --labels patient_id/fold columns, the "
                              "dataset name from --dataset)")
        listed = {str(c): [plain(v) for v in table[c]] for c in table.columns if c != "path"}
        return paths, listed

    def _read_labels(self, paths: list[str], ids: list[str]) -> tuple[LabelTable, list[int | None]]:
        """The parsed labels CSV and, per record, its row (None when the CSV has none for it)."""
        csv = self.labels_csv
        table = read_label_table(load_csv(csv, text_columns=("path", "subject_id")), csv, key_columns=("path",))
        clash = sorted(set(table.extra) & _STORE_COLUMNS)
        if clash:
            raise SourceError(f"{csv}: column(s) {clash} would replace the store's own record columns; rename them")
        if "path" in table.keys:
            keys, wanted, column = [normalize_record_path(k) for k in table.keys["path"]], paths, "path"
        elif table.ids is not None:
            keys, wanted, column = table.ids, ids, "id"
        else:
            raise SourceError(f"{csv}: labels CSV needs a 'path' column (relative record path) or an 'id' "
                              "column (record id) to join its rows to the records")
        row_of = {key: row for row, key in enumerate(keys)}
        if len(row_of) != len(keys):  # "x" and "./x.hea" are one record
            duplicated = sorted(k for k, n in Counter(keys).items() if n > 1)
            raise SourceError(f"{csv}: duplicate {column}(s) {duplicated[:5]}")
        rows = [row_of.get(key) for key in wanted]
        matched = sum(row is not None for row in rows)
        if matched == 0:
            raise SourceError(f"{csv}: no {column} in the labels CSV matches a record under {self.root} "
                              f"(CSV: {keys[:3]}, records: {wanted[:3]})")
        self.unmatched_label_rows = table.rows - matched
        if self.unmatched_label_rows:
            logger.warning("%s: %d row(s) name no record under %s (ignored)", csv, self.unmatched_label_rows,
                           self.root)
        self._label_names = table.label_names()
        return table, rows

    # -- pickling: reader processes get the source without the record list ------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_refs"] = None  # every reference travels with its own job; refs() lists them again if asked
        return state

    # -- Source interface -------------------------------------------------------------------------

    def refs(self) -> list[WfdbRef]:
        if self._refs is None:
            self._refs = self._build_refs()
        return self._refs

    def ref_id(self, ref: WfdbRef) -> tuple[str, str]:
        return ref.id, self._header_file(ref)

    def label_names(self) -> list[str] | None:
        return list(self._label_names) if self._label_names is not None else None

    def read(self, ref: WfdbRef) -> Record:
        header_file = self._header_file(ref)
        if ref.problem is not None:
            raise RecordError(ref.id, header_file, ref.problem)
        raw, fs, leads, comments = read_wfdb(self.root / ref.path, ref.id)
        signal = standardize(raw, fs, leads, self.fs_out, ref.id, header_file)
        # Header age/sex first, so that record-list / labels-CSV columns of the same name replace them.
        metadata = {"fold": ref.fold, "patient_id": ref.patient_id, "path": ref.path,
                    **header_demographics(parse_comments(comments)),
                    **dict(zip(self._columns, ref.metadata, strict=True))}
        return Record(id=ref.id, dataset=self.dataset, file=header_file, signal=signal, fs=self.fs_out,
                      fs_original=fs, labels=list(ref.labels), metadata=metadata)

    def _header_file(self, ref: WfdbRef) -> str:
        return str(self.root / ref.path) + ".hea"

    def describe(self) -> dict:
        return {"kind": self.kind, "dataset": self.dataset, "path": str(self.root),
                "record_list": str(self.record_list) if self.record_list is not None else None,
                "labels_csv": str(self.labels_csv) if self.labels_csv is not None else None,
                "labels_unmatched_rows": self.unmatched_label_rows}


def check_dataset_name(name: str) -> str:
    """A ``dataset`` value as given; SourceError for an empty name or one with '/', '\\', ',' or spaces.

    The name is a column value, an ``--exclude-datasets`` entry (comma-separated, spaces dropped)
    and a key of the store's per-dataset counts, so it must be one plain token.
    """
    name = str(name)
    if not name.strip():
        raise SourceError("--dataset must be a non-empty name")
    if not name.isprintable() or any(c.isspace() or c in "/\\," for c in name):
        raise SourceError(f"--dataset {name!r}: use one word, without '/', '\\', ',' or spaces")
    return name


def _text(value: Any) -> str | None:
    """A cell as non-empty text, or None for empty/NaN cells."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None
