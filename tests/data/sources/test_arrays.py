"""ArraySource on small .npy and .zarr arrays, with and without a labels CSV."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import zarr

from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.data.sources.arrays import ArraySource
from ecg_ray.errors import RecordError, SourceError

N, T = 4, 1000


def _data() -> np.ndarray:
    """(N, T, 12): record i, lead k holds the constant i + 0.1 * (k + 1)."""
    values = np.arange(N)[:, None, None] + 0.1 * np.arange(1, 13)[None, None, :]
    return np.broadcast_to(values, (N, T, 12)).astype(np.float32).copy()


def _middle(record) -> np.ndarray:
    return record.signal[len(record.signal) // 2]


@pytest.mark.parametrize("layout", ["NTC", "NCT"])
def test_npy_both_layouts(tmp_path, layout):
    data = _data() if layout == "NTC" else _data().transpose(0, 2, 1).copy()
    np.save(tmp_path / "x.npy", data)
    source = ArraySource(tmp_path / "x.npy", fs=100)
    assert source.layout == layout
    assert source.refs() == list(range(N))
    record = source.read(2)
    assert record.id == "2" and record.dataset == "custom"
    assert record.signal.shape == (T, 12) and record.signal.dtype == np.float32
    np.testing.assert_allclose(_middle(record), 2 + 0.1 * np.arange(1, 13), atol=1e-5)
    assert record.labels == []
    assert record.metadata["patient_id"] == "2" and 1 <= record.metadata["fold"] <= 10
    # Forcing the layout gives the same result as auto.
    forced = ArraySource(tmp_path / "x.npy", fs=100, layout=layout.lower()).read(2)
    np.testing.assert_array_equal(forced.signal, record.signal)


def test_zarr_array_and_pickling(tmp_path):
    array = zarr.create_array(str(tmp_path / "x.zarr"), shape=(N, 12, T), chunks=(1, 12, T), dtype="float32")
    array[:] = _data().transpose(0, 2, 1)
    source = ArraySource(tmp_path / "x.zarr", fs=100, dataset="mine")
    assert source.layout == "NCT"
    source.read(0)
    clone = pickle.loads(pickle.dumps(source))
    assert clone._array is None
    record = clone.read(3)
    assert record.dataset == "mine"
    np.testing.assert_allclose(_middle(record), 3 + 0.1 * np.arange(1, 13), atol=1e-5)


def test_zarr_v2(tmp_path):
    array = zarr.create_array(str(tmp_path / "v2.zarr"), shape=(N, T, 12), dtype="float32", zarr_format=2)
    array[:] = _data()
    assert ArraySource(tmp_path / "v2.zarr", fs=100).read(1).signal.shape == (T, 12)


def test_resample_500_to_100(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 5000, 12), dtype=np.float32))
    record = ArraySource(tmp_path / "x.npy", fs=500, fs_out=100).read(0)
    assert record.signal.shape == (1000, 12)
    assert record.fs == 100.0 and record.fs_original == 500.0


def test_leads_are_reordered(tmp_path):
    leads = list(reversed(CANONICAL_LEADS))
    np.save(tmp_path / "x.npy", _data())
    record = ArraySource(tmp_path / "x.npy", fs=100, leads=leads).read(0)
    np.testing.assert_allclose(_middle(record), 0.1 * np.arange(12, 0, -1), atol=1e-5)
    with pytest.raises(SourceError, match="unknown lead"):
        ArraySource(tmp_path / "x.npy", fs=100, leads=["I"] * 11 + ["X"])


def test_trailing_zeros_kept(tmp_path):
    data = _data()
    data[:, 800:] = 0.0
    np.save(tmp_path / "x.npy", data)
    assert ArraySource(tmp_path / "x.npy", fs=100).read(0).signal.shape == (T, 12)


def test_csv_with_labels_column(tmp_path):
    np.save(tmp_path / "x.npy", _data())
    pd.DataFrame({
        "id": ["a01", "a02", "007", "a04"],
        "labels": ["AF;RBBB", "", "NORM", "AF, LBBB"],
        "patient_id": ["p1", "p1", None, "p3"],
        "fold": [1, 1, 10, 4],
        "age": [50, 60, 70, 80],
        "site": ["x", "y", "x", "y"],
    }).to_csv(tmp_path / "meta.csv", index=False)
    source = ArraySource(tmp_path / "x.npy", fs=100, labels_csv=tmp_path / "meta.csv")
    assert source.label_names() is None
    records = [source.read(ref) for ref in source.refs()]
    assert [r.id for r in records] == ["a01", "a02", "007", "a04"]
    assert [r.labels for r in records] == [["AF", "RBBB"], [], ["NORM"], ["AF", "LBBB"]]
    assert [r.metadata["fold"] for r in records] == [1, 1, 10, 4]
    assert [r.metadata["patient_id"] for r in records] == ["p1", "p1", "007", "p3"]
    assert records[0].metadata["age"] == 50 and type(records[0].metadata["age"]) is int
    assert records[3].metadata["site"] == "y"
    assert source.ref_id(2) == ("007", str(tmp_path / "x.npy"))


def test_csv_with_onehot_columns(tmp_path):
    np.save(tmp_path / "x.npy", _data())
    pd.DataFrame({
        "label_AF": [1, 0, 0, 1],
        "label_NORM": [0, 1, 0, 1],
        "age": [1.5, 2.5, None, 4.0],
    }).to_csv(tmp_path / "meta.csv", index=False)
    source = ArraySource(tmp_path / "x.npy", fs=100, labels_csv=tmp_path / "meta.csv")
    assert source.label_names() == ["AF", "NORM"]
    records = [source.read(ref) for ref in source.refs()]
    assert [r.id for r in records] == ["0", "1", "2", "3"]
    assert [r.labels for r in records] == [["AF"], ["NORM"], [], ["AF", "NORM"]]
    assert np.isnan(records[2].metadata["age"])
    assert "label_AF" not in records[0].metadata


def test_csv_errors(tmp_path):
    np.save(tmp_path / "x.npy", _data())
    csv = tmp_path / "meta.csv"
    pd.DataFrame({"id": ["a", "b", "c"]}).to_csv(csv, index=False)
    with pytest.raises(SourceError, match=r"meta\.csv: 3 rows but .*x\.npy holds 4 records"):
        ArraySource(tmp_path / "x.npy", fs=100, labels_csv=csv)

    csv.write_bytes(b"\x00\xff\xfe garbage \x00\n\x01")
    with pytest.raises(SourceError, match=r"meta\.csv: unreadable CSV"):
        ArraySource(tmp_path / "x.npy", fs=100, labels_csv=csv)

    with pytest.raises(SourceError, match=r"missing\.csv: labels CSV not found"):
        ArraySource(tmp_path / "x.npy", fs=100, labels_csv=tmp_path / "missing.csv")

    pd.DataFrame({"label_AF": [1, 0, 2, 0]}).to_csv(csv, index=False)
    with pytest.raises(SourceError, match="label_AF.*0/1"):
        ArraySource(tmp_path / "x.npy", fs=100, labels_csv=csv)

    pd.DataFrame({"fold": [1, 2, 11, 3]}).to_csv(csv, index=False)
    with pytest.raises(SourceError, match="fold"):
        ArraySource(tmp_path / "x.npy", fs=100, labels_csv=csv)

    pd.DataFrame({"id": ["a", "b", "a", "c"]}).to_csv(csv, index=False)
    with pytest.raises(SourceError, match="duplicate id"):
        ArraySource(tmp_path / "x.npy", fs=100, labels_csv=csv)


def test_layout_errors(tmp_path):
    np.save(tmp_path / "square.npy", np.zeros((3, 12, 12), dtype=np.float32))
    with pytest.raises(SourceError, match="ambiguous.*--layout"):
        ArraySource(tmp_path / "square.npy", fs=100)
    assert ArraySource(tmp_path / "square.npy", fs=100, layout="NTC").layout == "NTC"

    np.save(tmp_path / "x.npy", _data())
    with pytest.raises(SourceError, match="layout NCT"):
        ArraySource(tmp_path / "x.npy", fs=100, layout="NCT")
    with pytest.raises(SourceError, match="layout must be"):
        ArraySource(tmp_path / "x.npy", fs=100, layout="TNC")

    np.save(tmp_path / "eight.npy", np.zeros((3, 100, 8), dtype=np.float32))
    with pytest.raises(SourceError, match="no axis of 12"):
        ArraySource(tmp_path / "eight.npy", fs=100)
    np.save(tmp_path / "flat.npy", np.zeros((100, 12), dtype=np.float32))
    with pytest.raises(SourceError, match="expected"):
        ArraySource(tmp_path / "flat.npy", fs=100)


def test_source_errors(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        ArraySource(tmp_path / "none.npy", fs=100)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match=r"\.npy file or a \.zarr"):
        ArraySource(tmp_path / "x.txt", fs=100)
    np.save(tmp_path / "x.npy", _data())
    with pytest.raises(SourceError, match="sampling rate"):
        ArraySource(tmp_path / "x.npy", fs=0)


def test_bad_record_names_the_file(tmp_path):
    data = _data()
    data[1, 10, 3] = np.inf
    np.save(tmp_path / "x.npy", data)
    source = ArraySource(tmp_path / "x.npy", fs=100)
    source.read(0)
    with pytest.raises(RecordError, match="inf") as info:
        source.read(1)
    assert "x.npy" in str(info.value) and info.value.record_id == "1"
