"""``RecordRows``: the compact row store behind ``StoreWriter`` builds exactly ``pd.DataFrame(rows)``.

Blocks of a few rows force every path: columns that are typed in some blocks and not in others,
columns that appear late or vanish, NaN-padded strings, values pandas infers as object. The
reference is pandas itself on the list of row dicts the writer used to keep.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from ecg_ray.data import record_rows
from ecg_ray.data.prepare import prepare_store
from ecg_ray.data.record_rows import RecordRows
from tests.data.parallel_sources import ShortRecords


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"id": f"r{i}", "dataset": "mimic", "offset": i * 1000, "length": 1000, "fs_original": 500.0}
        if i % 3:
            row["fold"] = 1 + i % 10  # int, missing in a third of the rows: float64 with NaN overall
        if i % 5 or i > 40:
            row["sex"] = rng.choice(["F", "M"])  # str, NaN where missing
        row["age"] = rng.choice([float(rng.randint(18, 90)), float("nan")])
        row["mixed"] = rng.choice([1, "one", 2.5])  # object in pandas
        row["int_then_float"] = i if i < 30 else i + 0.5  # int blocks, then float blocks: float64
        row["flag"] = bool(i % 2)  # bool
        if i > 50:
            row["late"] = f"x{i}"  # appears after several blocks
        if i < 20:
            row["early"] = i  # vanishes after a few blocks
        if i == 64:
            row["huge"] = 2 ** 70  # beyond int64: stays a Python int
        rows.append(row)
    return rows


@pytest.mark.parametrize("block_rows", [1, 7, 64, 10_000])
def test_frame_equals_pandas_on_the_row_dicts(block_rows):
    rows = _rows(200, seed=block_rows)
    table = RecordRows(block_rows=block_rows)
    for row in rows:
        table.append(row, [])
    expected, actual = pd.DataFrame(rows), table.frame()
    assert list(actual.columns) == list(expected.columns)
    assert actual.dtypes.to_dict() == expected.dtypes.to_dict()
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)
    assert expected["fold"].dtype == np.float64 and expected["mixed"].dtype == object  # the cases are real


def test_label_matrix_marks_each_rows_names():
    rng = random.Random(3)
    names = [f"L{j}" for j in range(12)]
    sets = [rng.sample(names, rng.randint(0, 4)) for _ in range(300)]
    table = RecordRows(block_rows=16)
    for i, labels in enumerate(sets):
        table.append({"id": str(i)}, labels)
    columns = sorted(names, reverse=True) + ["never carried"]
    expected = np.zeros((300, len(columns)), dtype=np.uint8)
    for i, labels in enumerate(sets):
        for name in labels:
            expected[i, columns.index(name)] = 1
    np.testing.assert_array_equal(table.label_matrix(columns), expected)
    assert set(table.label_names()) == {n for labels in sets for n in labels}


def test_store_tables_do_not_depend_on_the_block_size(tmp_path, monkeypatch):
    prepare_store([ShortRecords(3000)], tmp_path / "one", chunk_samples=4096, workers=1, progress=False)
    monkeypatch.setattr(record_rows, "BLOCK_ROWS", 97)
    prepare_store([ShortRecords(3000)], tmp_path / "many", chunk_samples=4096, workers=1, progress=False)
    for table in ("records.parquet", "labels.parquet"):
        assert (tmp_path / "one" / table).read_bytes() == (tmp_path / "many" / table).read_bytes()
