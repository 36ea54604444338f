"""Code15Source on a tiny synthetic CODE-15%-style directory (HDF5 parts + exams.csv)."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pandas as pd
import pytest

from ecg_ray.data.sources.code15 import CODE15_LABELS, Code15Source, strip_padding
from ecg_ray.errors import RecordError, SourceError

FS = 400
PADDED = 4096


def _exam(seconds: int, *, first_row_zero: bool = False, nan: bool = False) -> np.ndarray:
    """One exam zero-padded symmetrically to 4096 samples; lead k holds the constant 0.1 * (k + 1)."""
    n = seconds * FS
    body = np.tile(0.1 * np.arange(1, 13, dtype=np.float32), (n, 1))
    if first_row_zero:
        body[0] = 0.0  # a genuine all-zero sample must not shorten the exam
    if nan:
        body[n // 2, 3] = np.nan
    out = np.zeros((PADDED, 12), dtype=np.float32)
    start = (PADDED - n) // 2
    out[start:start + n] = body
    return out


def _write_part(path, exam_ids, exams) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", data=np.stack(exams).astype(np.float32))
        f.create_dataset("exam_id", data=np.asarray(exam_ids, dtype=np.int64))


@pytest.fixture()
def code15_dir(tmp_path):
    _write_part(tmp_path / "exams_part0.hdf5", [101, 102, 103],
                [_exam(10), _exam(7, first_row_zero=True), _exam(7)])
    _write_part(tmp_path / "exams_part1.hdf5", [201, 202], [_exam(10, nan=True), np.zeros((PADDED, 12))])
    rows = [
        # exam_id, age, is_male, patient, labels set, trace_file
        (101, 54, True, 9001, {"AF"}, "exams_part0.hdf5"),
        (102, 61, False, 9002, set(), "exams_part0.hdf5"),
        (103, 70, False, 9002, {"RBBB", "1dAVb"}, "exams_part0.hdf5"),
        (201, 33, True, 9003, {"ST"}, "exams_part1.hdf5"),
        (202, 40, True, 9004, set(), "exams_part1.hdf5"),
    ]
    table = pd.DataFrame([
        {"exam_id": e, "age": a, "is_male": m, "nn_predicted_age": a + 1.5,
         **{name: name in labels for name in CODE15_LABELS},
         "patient_id": p, "death": None if e == 102 else e == 101,
         "timey": 3.2 if e != 102 else None, "normal_ecg": not labels, "trace_file": t}
        for e, a, m, p, labels, t in rows
    ])
    table.to_csv(tmp_path / "exams.csv", index=False)
    return tmp_path


def test_refs_ids_lengths_and_labels(code15_dir):
    source = Code15Source(code15_dir, fs_out=100)
    refs = source.refs()
    assert refs == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert source.label_names() == list(CODE15_LABELS)

    records = {r.id: r for r in (source.read(ref) for ref in refs[:3])}
    assert list(records) == ["101", "102", "103"]
    assert records["101"].signal.shape == (1000, 12)
    assert records["102"].signal.shape == (700, 12)
    assert records["103"].signal.shape == (700, 12)
    for record in records.values():
        assert record.signal.dtype == np.float32
        assert record.fs == 100.0 and record.fs_original == 400.0
        assert record.dataset == "code15"
        assert record.file.endswith("exams_part0.hdf5")
    assert records["101"].labels == ["AF"]
    assert records["102"].labels == []
    assert records["103"].labels == ["1dAVb", "RBBB"]  # dataset order, not CSV cell order


def test_lead_order_preserved(code15_dir):
    record = Code15Source(code15_dir).read((0, 0))
    middle = record.signal[len(record.signal) // 2]
    np.testing.assert_allclose(middle, 0.1 * np.arange(1, 13), atol=1e-4)


def test_metadata(code15_dir):
    source = Code15Source(code15_dir)
    first, second = source.read((0, 0)), source.read((0, 1))
    assert first.metadata["patient_id"] == "9001"
    assert first.metadata["sex"] == 0 and second.metadata["sex"] == 1  # PTB-XL coding
    assert first.metadata["age"] == 54.0
    assert first.metadata["exam_id"] == 101
    assert first.metadata["trace_file"] == "exams_part0.hdf5"
    assert first.metadata["death"] == 1 and second.metadata["death"] == -1
    assert first.metadata["normal_ecg"] == 0 and second.metadata["normal_ecg"] == 1
    assert np.isnan(second.metadata["timey"])
    # Folds follow the patient: exams 102 and 103 share patient 9002.
    third = source.read((0, 2))
    assert 1 <= first.metadata["fold"] <= 10
    assert second.metadata["fold"] == third.metadata["fold"]


def test_bad_records_name_the_file(code15_dir):
    source = Code15Source(code15_dir)
    with pytest.raises(RecordError, match="NaN") as info:
        source.read((1, 0))
    assert "exams_part1.hdf5" in str(info.value)
    assert info.value.record_id == "201"
    with pytest.raises(RecordError, match="all zeros"):
        source.read((1, 1))


def test_exam_missing_from_csv(code15_dir):
    table = pd.read_csv(code15_dir / "exams.csv")
    table[table.exam_id != 103].to_csv(code15_dir / "exams.csv", index=False)
    with pytest.raises(RecordError, match="exam_id 103 not listed"):
        Code15Source(code15_dir).read((0, 2))


def test_single_file_and_pickling(code15_dir):
    source = Code15Source(code15_dir / "exams_part1.hdf5")
    assert source.refs() == [(0, 0), (0, 1)]
    assert source.ref_id((0, 0)) == ("201", str(code15_dir / "exams_part1.hdf5"))
    other = Code15Source(code15_dir / "exams_part0.hdf5", exams_csv=code15_dir / "exams.csv")
    other.read((0, 0))  # opens the HDF5 file and loads the table in this process
    clone = pickle.loads(pickle.dumps(other))
    assert clone._handles == {} and clone._exams is None
    assert clone.read((0, 1)).id == "102"
    other.close()
    clone.close()


def test_missing_exams_csv(code15_dir):
    (code15_dir / "exams.csv").unlink()
    with pytest.raises(SourceError, match="exams.csv"):
        Code15Source(code15_dir)
    with pytest.raises(SourceError, match="exams.csv"):
        Code15Source(code15_dir / "exams_part0.hdf5")


def test_missing_directory_and_columns(tmp_path, code15_dir):
    with pytest.raises(SourceError, match="not found"):
        Code15Source(tmp_path / "nope")
    (code15_dir / "empty").mkdir()
    with pytest.raises(SourceError, match="no exams_part"):
        Code15Source(code15_dir / "empty")
    table = pd.read_csv(code15_dir / "exams.csv").drop(columns=["AF"])
    table.to_csv(code15_dir / "exams.csv", index=False)
    with pytest.raises(SourceError, match="AF"):
        Code15Source(code15_dir)


def test_strip_padding_falls_back_to_nonzero_span():
    raw = np.zeros((4096, 12), dtype=np.float32)
    raw[10:3000] = 1.0  # starts before either centred window: keep the non-zero span
    assert strip_padding(raw, "x", "f").shape == (2990, 12)
    raw[:] = 0.0
    raw[100:3000] = 1.0  # fits the centred 10 s window: that is the exam's true length
    assert strip_padding(raw, "x", "f").shape == (4000, 12)
