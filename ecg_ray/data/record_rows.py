"""The rows and label sets a store writer has accepted, kept compactly until its tables are written.

A prepare holds every record's row (id, dataset, file, offset, length, rate, the reader's metadata)
and label names until ``StoreWriter.finalize`` writes ``records.parquet`` and ``labels.parquet``.
Kept as a list of dicts that cost ~1.1 kB per record (``bench/scale.py``): 11 GB for a 10M-record
corpus. Here the rows go into per-column lists, and every ``block_rows`` rows each column becomes a
typed block: Arrow strings (bytes + a 4-byte offset), int64 or float64 (8 bytes). Label sets are
integer ids in one flat array. ``bench/writer_memory.py`` measures both.

The table that comes out is exactly ``pd.DataFrame(list_of_row_dicts)``: a column that is not
all-``str``, all-``int`` or all-``float`` (missing values count as NaN, as pandas fills them) in
every block keeps its Python values and is inferred by pandas at the end, as before.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

#: rows per block: the uncompacted rows in memory at any time (~1 kB each)
BLOCK_ROWS = 16_384
_MISSING = float("nan")


class RecordRows:
    """Rows (dicts of column -> value) and each row's label names, appended one record at a time."""

    def __init__(self, block_rows: int | None = None):
        self.block_rows = int(block_rows or BLOCK_ROWS)
        self._columns: dict[str, list] = {}  # the current block's values, NaN where a row lacks the column
        self._blocks: dict[str, list] = {}  # per column, its compacted blocks (None: not in that block)
        self._block_lengths: list[int] = []
        self._pending = 0
        self._count = 0
        self.label_ids: dict[str, int] = {}
        self._label_index = array("i")
        self._label_end = array("q")

    def __len__(self) -> int:
        return self._count

    def append(self, row: dict[str, Any], labels: Iterable[str]) -> None:
        for name, value in row.items():
            column = self._columns.get(name)
            if column is None:
                column = self._columns[name] = [_MISSING] * self._pending
            column.append(value)
        self._pending += 1
        self._count += 1
        for column in self._columns.values():
            if len(column) < self._pending:  # this row lacks the column
                column.append(_MISSING)
        ids = self.label_ids
        for name in labels:
            self._label_index.append(ids.setdefault(name, len(ids)))
        self._label_end.append(len(self._label_index))
        if self._pending >= self.block_rows:
            self._seal()

    def _seal(self) -> None:
        if not self._pending:
            return
        for name in self._columns:
            self._blocks.setdefault(name, [None] * len(self._block_lengths))
        for name, blocks in self._blocks.items():
            values = self._columns.get(name)
            blocks.append(_compact(values) if values is not None else None)
        self._block_lengths.append(self._pending)
        self._columns = {}
        self._pending = 0

    def frame(self) -> pd.DataFrame:
        """All rows as ``pd.DataFrame(rows)`` would build them (columns in order of first appearance)."""
        self._seal()
        return pd.DataFrame({name: self._column(blocks) for name, blocks in self._blocks.items()})

    def _column(self, blocks: list) -> Any:
        kinds = {_kind(block) for block in blocks}
        if len(kinds) == 1 and None not in kinds:
            kind = kinds.pop()
            if kind == "str":
                import pyarrow as pa

                # The dtype pandas infers for str values and NaN ("str", NaN as missing).
                return pd.array(pa.chunked_array(blocks, type=pa.string()).to_pylist(), dtype="str")
            return np.concatenate(blocks)
        # Mixed kinds: Python values again, for pandas to infer as it would from the row dicts.
        values: list = []
        for block, length in zip(blocks, self._block_lengths, strict=True):
            values += [_MISSING] * length if block is None else _values(block)
        return values

    def label_names(self) -> list[str]:
        """Every label name some row carries, in order of first appearance."""
        return list(self.label_ids)

    def label_matrix(self, columns: list[str]) -> np.ndarray:
        """(rows, len(columns)) uint8: 1 where the row carries that label; ``columns`` must hold every name."""
        ends = np.frombuffer(self._label_end, dtype=np.int64) if self._count else np.zeros(0, np.int64)
        index = np.frombuffer(self._label_index, dtype=np.int32) if len(self._label_index) else np.zeros(0, np.int32)
        position = {name: j for j, name in enumerate(columns)}
        column_of = np.array([position[name] for name in self.label_ids], dtype=np.int64)
        matrix = np.zeros((self._count, len(columns)), dtype=np.uint8)
        rows = np.repeat(np.arange(self._count), np.diff(ends, prepend=0))
        if len(index):
            matrix[rows, column_of[index]] = 1
        return matrix


def _compact(values: list) -> Any:
    """A block as an Arrow string array, int64 or float64 array where every value allows it, else the list."""
    types = {type(v) for v in values}
    if types == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return values
    if types <= {float}:
        return np.array(values, dtype=np.float64)
    if types <= {str, float} and all(type(v) is str or math.isnan(v) for v in values):
        import pyarrow as pa

        return pa.array([v if type(v) is str else None for v in values], type=pa.string())
    return values


def _kind(block: Any) -> str | None:
    if block is None or isinstance(block, list):
        return None
    if isinstance(block, np.ndarray):
        return block.dtype.kind  # "i" or "f"
    return "str"


def _values(block: Any) -> list:
    """A compacted block back as the Python values it was built from (NaN for a missing string)."""
    if isinstance(block, list):
        return block
    if isinstance(block, np.ndarray):
        return block.tolist()
    return [_MISSING if v is None else v for v in block.to_pylist()]
