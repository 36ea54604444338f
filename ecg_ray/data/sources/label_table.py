"""The labels/metadata CSV of ``prepare numpy`` and ``prepare wfdb`` (``--labels``), parsed once.

One row per record:

* ``id``: record ids; ``path`` (wfdb only): the record's path relative to its directory;
* ``labels``: label names separated by ``;`` or ``,`` in the cell, and/or one-hot 0/1 columns
  ``label_<name>``;
* ``fold`` (1..10) and ``patient_id`` when known;
* any other column is copied into the record's metadata.

The array reader matches rows to records by position, the WFDB reader by id or path; both use
:func:`read_label_table`, so a CSV means the same thing to both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecg_ray.errors import SourceError

LABEL_PREFIX = "label_"
_RESERVED = {"id", "labels", "fold", "patient_id"}
_LABEL_SPLIT = re.compile(r"[;,]")


@dataclass
class LabelTable:
    """A parsed labels CSV: per-row lists, all of length ``rows``.

    ``ids`` / ``keys`` are None when the CSV has no ``id`` / key column. ``label_columns`` names
    the one-hot columns (without the prefix), None when there are none. ``extra`` holds every other
    column, cell by cell as plain Python scalars.
    """

    csv: Path
    rows: int
    ids: list[str] | None = None
    keys: dict[str, list[str]] = field(default_factory=dict)
    labels: list[list[str]] = field(default_factory=list)
    label_columns: list[str] | None = None
    has_label_text: bool = False
    folds: list[int | None] = field(default_factory=list)
    patients: list[str | None] = field(default_factory=list)
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def label_names(self) -> list[str] | None:
        """The fixed label set when every label comes from a one-hot column; free text is open-ended."""
        if self.label_columns is not None and not self.has_label_text:
            return list(self.label_columns)
        return None

    def metadata(self, row: int) -> dict[str, Any]:
        """The extra columns of one row, for ``Record.metadata``."""
        return {column: values[row] for column, values in self.extra.items()}


def load_csv(csv: str | Path, text_columns: tuple[str, ...] = (), what: str = "labels CSV") -> pd.DataFrame:
    """Read a CSV whose id-like columns stay text ("007" must not become 7); errors name the file."""
    csv = Path(csv)
    if not csv.is_file():
        raise SourceError(f"{csv}: {what} not found")
    dtypes = dict.fromkeys(("id", "patient_id", "labels", *text_columns), str)
    try:
        table = pd.read_csv(csv, dtype=dtypes)
    except Exception as exc:
        raise SourceError(f"{csv}: unreadable CSV ({type(exc).__name__}: {exc})") from None
    table.columns = [str(c) for c in table.columns]
    return table


def read_label_table(table: pd.DataFrame, csv: str | Path, key_columns: tuple[str, ...] = ()) -> LabelTable:
    """Parse a table from :func:`load_csv`; ``key_columns`` (e.g. ``path``) are kept as text keys.

    Raises SourceError naming the CSV, the column and the first bad row for empty or duplicate
    ids/keys, one-hot cells other than 0/1 and folds outside 1..10.
    """
    csv = Path(csv)
    n = len(table)
    columns = list(table.columns)
    parsed = LabelTable(csv=csv, rows=n, labels=[[] for _ in range(n)], folds=[None] * n, patients=[None] * n)

    if "id" in columns:
        parsed.ids = unique_text(table["id"], csv, "id")
    for key in key_columns:
        if key in columns:
            parsed.keys[key] = unique_text(table[key], csv, key)

    label_columns = [c for c in columns if c.startswith(LABEL_PREFIX) and len(c) > len(LABEL_PREFIX)]
    onehot = np.zeros((n, len(label_columns)), dtype=bool)
    for j, column in enumerate(label_columns):
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise SourceError(f"{csv}: column {column!r} must hold 0/1, "
                              f"row {row} has {table[column].iloc[row]!r}")
        onehot[:, j] = values == 1.0
    names = [c[len(LABEL_PREFIX):] for c in label_columns]
    if label_columns:
        parsed.label_columns = names

    text = table["labels"] if "labels" in columns else None
    parsed.has_label_text = text is not None
    for i in range(n):
        labels = [names[j] for j in np.flatnonzero(onehot[i])]
        if text is not None and isinstance(text.iloc[i], str):
            for name in _LABEL_SPLIT.split(text.iloc[i]):
                name = name.strip()
                if name and name not in labels:
                    labels.append(name)
        parsed.labels[i] = labels

    if "fold" in columns:
        folds = pd.to_numeric(table["fold"], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isin(folds, np.arange(1, 11, dtype=float))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise SourceError(f"{csv}: fold must be an integer 1..10, "
                              f"row {row} has {table['fold'].iloc[row]!r}")
        parsed.folds = [int(f) for f in folds]
    if "patient_id" in columns:
        parsed.patients = [str(p).strip() if isinstance(p, str) and p.strip() else None
                           for p in table["patient_id"]]

    skip = _RESERVED | set(label_columns) | set(key_columns)
    for column in columns:
        if column not in skip:
            parsed.extra[column] = [plain(v) for v in table[column]]
    return parsed


def unique_text(values: pd.Series, csv: Path, column: str) -> list[str]:
    """A column's cells as stripped text; SourceError naming the CSV for an empty or duplicate cell."""
    if values.isna().any():
        rows = np.flatnonzero(values.isna().to_numpy())[:5].tolist()
        raise SourceError(f"{csv}: empty {column} in row(s) {rows}")
    stripped = pd.Series([str(v).strip() for v in values])
    if stripped.duplicated().any():
        duplicated = sorted(stripped[stripped.duplicated()].unique())
        raise SourceError(f"{csv}: duplicate {column}(s) {duplicated[:5]}")
    return stripped.tolist()


def plain(value: Any) -> Any:
    """A CSV cell as a plain Python scalar (numpy scalars do not survive every writer)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA or value is None:
        return np.nan
    return value
