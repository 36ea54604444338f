"""EcgStore reads the records table column by column: the stream's driver path never reads the strings.

Issue #12: a driver (and every training worker) must hold per-record metadata only, under ~300
bytes per record at 1M records. The whole records table costs ~170 bytes per record (ids, files,
patients as strings); the stream needs offset and length (+ fold / dataset to select). These tests
run the driver side of ``select_records`` + ``train_crops`` on a 14k-record store (11k streamed) without Ray (the
datasource is captured before Ray would read it), count which columns of records.parquet are read,
and compare everything the read tasks receive with the full table read by pandas.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ecg_ray.data import stream
from ecg_ray.data.records import read_records
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import eval_windows, select_records, train_crops
from ecg_ray.errors import ConfigError
from ecg_ray.train.preflight import check_folds
from tests.data.synthetic_stores import grouped_store

RECORDS = 14_000
LENGTH = 60
CROP = 50
SHORT = np.arange(7, RECORDS, 997)  # records too short for a crop: their ids must still be reported
STRING_COLUMNS = {"id", "dataset", "file", "patient_id"}


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    lengths = np.full(RECORDS, LENGTH)
    lengths[SHORT] = CROP - 10
    return grouped_store(tmp_path_factory.mktemp("columns") / "s", {"A": RECORDS // 2, "B": RECORDS // 2},
                         lengths=lengths.tolist())


@pytest.fixture(scope="module")
def reference(big_store):
    """The whole records table, read by pandas on its own (the old way every caller read it)."""
    return pd.read_parquet(big_store / "records.parquet")


class ParquetReads:
    """Records every ``pyarrow.parquet.read_table`` call on records.parquet: the columns it asked for."""

    def __init__(self):
        self.columns: list[list[str] | None] = []
        self._original = pq.read_table

    def __call__(self, source, *args, **kwargs):
        if str(source).endswith("records.parquet"):
            columns = kwargs.get("columns")
            self.columns.append(None if columns is None else list(columns))
        return self._original(source, *args, **kwargs)

    def read(self) -> set[str]:
        assert None not in self.columns, "the whole records table was read"
        return {name for columns in self.columns for name in columns}


@pytest.fixture
def parquet_reads(monkeypatch):
    reads = ParquetReads()
    monkeypatch.setattr(pq, "read_table", reads)
    return reads


def driver_side(store, indices, **kwargs):
    """``train_crops`` up to the datasource it hands Ray (no Ray started): (source, info)."""
    captured = []
    with mock.patch.object(stream, "_dataset", lambda source, tasks: captured.append(source) or source):
        _, info = train_crops(store, indices, **kwargs)
    return captured[0], info


def task_arrays(source):
    """Store index, offset and length of every record the read tasks carry, in task order."""
    tasks = source.get_read_tasks(1)
    columns = [[], [], [], []]
    for task in tasks:
        read_fn = task._read_fn if hasattr(task, "_read_fn") else task.read_fn
        args = read_fn.__defaults__[1]  # (spec, task, part_ids, indices, offsets, lengths, labels)
        for out, values in zip(columns, args[2:6], strict=True):
            out.append(values)
    return len(tasks), *(np.concatenate(c) for c in columns)


def test_stream_driver_reads_no_string_column_and_matches_full_table(big_store, reference, parquet_reads):
    store = EcgStore(big_store)
    train = select_records(store, folds=range(1, 9))
    source, info = driver_side(store, train, crop=CROP, seed=5, records_per_task=1000)

    # What the driver read: offset and length at open, fold to select, and ids of the short records only.
    assert parquet_reads.read() == {"offset", "length", "fold", "id"}
    assert sum(c == ["id"] for c in parquet_reads.columns) == 1
    assert parquet_reads.read() & STRING_COLUMNS == {"id"}
    # What it keeps: offset, length, fold as 8-byte numbers; no string of any record.
    assert store.metadata_bytes() == 3 * 8 * RECORDS

    # Identical to the whole-table path: selection, the too-short ids, and each task's offsets/lengths.
    expected = np.flatnonzero(reference["fold"].isin(range(1, 9)).to_numpy())
    np.testing.assert_array_equal(train, expected)
    short = expected[reference["length"].to_numpy()[expected] < CROP]
    assert len(short) > 5 and info.too_short == reference["id"].to_numpy()[short].tolist()
    tasks, parts, indices, offsets, lengths = task_arrays(source)
    assert tasks == info.read_tasks == 12 and (parts == 0).all() and len(indices) > 10_000
    assert sorted(indices) == sorted(set(expected) - set(short))
    np.testing.assert_array_equal(offsets, reference["offset"].to_numpy()[indices])
    np.testing.assert_array_equal(lengths, reference["length"].to_numpy()[indices])


def test_dataset_filter_reads_categories_not_strings(big_store, reference, parquet_reads):
    store = EcgStore(big_store)
    picked = select_records(store, datasets=["b"], folds=[2, 3])
    expected = np.flatnonzero((reference["dataset"] == "b") & reference["fold"].isin([2, 3]))
    np.testing.assert_array_equal(picked, expected)
    assert parquet_reads.read() == {"offset", "length", "fold", "dataset"}
    # dataset is kept as categories: a one-byte code per record, not a string per record
    assert isinstance(store.column("dataset"), pd.Categorical)
    assert store.metadata_bytes() <= (3 * 8 + 1) * RECORDS + 100
    with pytest.raises(ConfigError, match=r"data.datasets: \['c'\] not in store \(has \['a', 'b'\]\)"):
        select_records(store, datasets=["b", "c"])


def test_eval_windows_and_read_records_use_offsets_only(big_store, reference, parquet_reads):
    store = EcgStore(big_store)
    wanted = np.array([11_999, 3, 6_000, 42])
    signals = read_records(store, wanted)
    for i, signal in zip(wanted, signals, strict=True):
        assert signal.shape == (reference["length"][i], 12) and (signal[:, 0] == i).all()
    captured = []
    with mock.patch.object(stream, "_dataset", lambda source, tasks: captured.append(source) or source):
        _, info = eval_windows(store, np.arange(2_000), window=CROP, stride=10, with_labels=False,
                               records_per_task=300)
    assert info.too_short == reference["id"].to_numpy()[SHORT[SHORT < 2_000]].tolist()
    assert info.read_tasks == 7
    assert parquet_reads.read() == {"offset", "length", "id"}
    assert store.metadata_bytes() == 2 * 8 * RECORDS


def test_whole_table_still_there_and_wins_over_columns(big_store, reference):
    store = EcgStore(big_store)
    assert len(store) == RECORDS and store.has_column("patient_id") and not store.has_column("age")
    assert store.take("file", np.array([5, 0])) == ["synthetic/5", "synthetic/0"]
    with pytest.raises(KeyError, match="age"):
        store.column("age")
    pd.testing.assert_frame_equal(store.records, reference)
    # Once the table is read it is the one copy: the columns come from it, edits to it included.
    store.records.loc[[1, 3], "length"] = 10
    assert store.column("length")[[0, 1, 3]].tolist() == [LENGTH, 10, 10]
    assert store.metadata_bytes() == int(store.records.memory_usage(deep=True, index=False).sum())


def test_missing_folds_and_store_without_fold_column(tmp_path):
    """Records without a fold (null in Parquet) are never selected by a fold filter; a store without
    the column says so, as before."""
    store_dir = grouped_store(tmp_path / "s", {"A": 30}, length=LENGTH)
    table = pd.read_parquet(store_dir / "records.parquet")
    table["fold"] = pd.array([None if i % 3 == 0 else 1 + 2 * (i % 5) for i in range(30)], dtype="Int64")
    table.to_parquet(store_dir / "records.parquet", index=False)
    store = EcgStore(store_dir)
    assert np.isnan(store.column("fold")[0])
    np.testing.assert_array_equal(select_records(store, folds=[3, 5]), [1, 2, 7, 11, 16, 17, 22, 26])
    check_folds(store, [2, 3], "data.train_folds")
    with pytest.raises(ConfigError, match=r"no records in folds \[11\] .*folds present: 1, 3, 5, 7, 9\)"):
        check_folds(store, [11], "data.train_folds")

    table.drop(columns="fold").to_parquet(store_dir / "records.parquet", index=False)
    store = EcgStore(store_dir)
    with pytest.raises(ConfigError, match="has no folds; remove data.folds"):
        select_records(store, folds=[1])
    with pytest.raises(ConfigError, match="has no folds; set data.train_folds=null"):
        check_folds(store, [1], "data.train_folds")


def test_value_codes_number_strings_without_keeping_them(big_store, reference, tmp_path):
    """patient_index reads patient_id as int32 codes (4 B/record): equal to factorising the strings, one
    numbering across row groups, nulls -1, and the strings are not cached."""
    import shutil

    import pyarrow as pa

    copy = tmp_path / "store"
    shutil.copytree(big_store, copy)
    table = pq.read_table(copy / "records.parquet")
    patients = table.column("patient_id").to_pylist()
    patients[5] = None  # a record without a patient id
    patients[9000] = patients[3]  # a patient seen again in another row group
    table = table.set_column(table.schema.get_field_index("patient_id"), "patient_id", pa.array(patients))
    # small row groups: each gets its own dictionary, which value_codes must unify
    pq.write_table(table, copy / "records.parquet", row_group_size=1000)
    store = EcgStore(copy)
    codes, distinct = store.value_codes("patient_id")
    expected, uniques = pd.factorize(pd.Series(patients, dtype=object))
    assert codes.dtype == np.int32 and distinct == len(uniques) == RECORDS - 2
    assert codes[5] == -1 and codes[9000] == codes[3]
    # the same partition of records as factorize (numbers may differ, the grouping may not)
    assert len(set(zip(codes.tolist(), expected.tolist(), strict=True))) == len(uniques) + 1
    assert "patient_id" not in store._columns
    assert store.value_codes("patient_id")[0] is codes  # kept
    # through the stream's helper: one code per patient, a record without id a patient of its own
    indices = np.arange(RECORDS)
    part = stream.StorePart(store, indices, 1.0)
    patient = stream.patient_codes([part], np.zeros(RECORDS, dtype=np.int64), indices)
    assert patient[9000] == patient[3] and len(np.unique(patient)) == RECORDS - 1
