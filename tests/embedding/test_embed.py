"""``ecg-ray embed``: Parquet rows against a direct encoder pass, order over many read tasks, resampling,
too-short records, atomic failure and the overwrite rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ecg_ray.cli import main
from ecg_ray.data.signal import resample
from ecg_ray.data.store import EcgStore
from ecg_ray.data.windows import cut_windows, read_windows
from ecg_ray.embedding import EncoderSource, embed_store
from ecg_ray.embedding.parquet import read_metadata
from ecg_ray.embedding.reading import resampled_length
from ecg_ray.models.registry import _ENCODERS, register_encoder
from ecg_ray.portable.formats import ENCODER_FORMAT
from tests.cli import run_json
from tests.data.synthetic_stores import grouped_store
from tests.embedding.tiny import NAME, FailingEncoder, TinyEncoder


@pytest.fixture
def tiny_encoder():
    register_encoder(NAME)(TinyEncoder)
    register_encoder("failing_test_encoder")(FailingEncoder)
    yield NAME
    _ENCODERS.pop(NAME, None)
    _ENCODERS.pop("failing_test_encoder", None)


def _source(name: str = NAME, fs: float = 100.0, input_length: int = 16) -> EncoderSource:
    return EncoderSource(name=name, state_dict=None, fs=fs, input_length=input_length, seed=3)


def _encoder_file(path: Path, input_length: int = 250) -> Path:
    torch.manual_seed(0)
    torch.save({"format": ENCODER_FORMAT, "encoder": NAME, "state_dict": TinyEncoder().state_dict(), "method": "none",
                "epoch": 0, "fs": 100.0, "input_length": input_length, "config": {}, "ecg_ray_version": "test"}, path)
    return path


def _embeddings(table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    return column.values.to_numpy().reshape(len(column), column.type.list_size)


def _direct(encoder, windows) -> dict[int, np.ndarray]:
    """The reference: encoder(windows).mean over each record's windows, in one plain forward pass."""
    with torch.no_grad():
        out = encoder(torch.from_numpy(windows.signal)).numpy()
    return {int(i): out[windows.record_index == i].mean(0) for i in np.unique(windows.record_index)}


def test_resampled_length_matches_resample():
    rng = np.random.default_rng(0)
    for fs_in, fs_out in ((500, 100), (100, 500), (257, 100), (400, 100), (360, 240), (100, 100)):
        for n in (1, 2, 7, 999, 1000, 1001):
            expected = len(resample(rng.standard_normal((n, 12)), fs_in, fs_out))
            assert resampled_length(np.array([n]), fs_in, fs_out)[0] == expected, (fs_in, fs_out, n)


def test_ptbxl_sample_one_row_per_record_and_per_window(ray_session, ptbxl_store, tiny_encoder, tmp_path, capsys):
    encoder = _encoder_file(tmp_path / "tiny.pt")
    out = tmp_path / "emb.parquet"
    summary = run_json(capsys, "embed", "--encoder", encoder, "--store", ptbxl_store, "--out", out)
    store = EcgStore(ptbxl_store)
    table = pq.read_table(out)
    assert summary["records"] == table.num_rows == len(store) and summary["dim"] == 16 and summary["out"] == str(out)
    assert table.schema.field("embedding").type.list_size == 16
    assert str(table.schema.field("embedding").type.value_type) == "float"
    assert table.column("record_index").to_pylist() == list(range(len(store)))
    assert table.column("record_id").to_pylist() == store.records["id"].astype(str).tolist()
    assert table.column("fold").to_pylist() == store.records["fold"].astype(int).tolist()
    assert table.column("patient_id").to_pylist() == store.records["patient_id"].astype(str).tolist()
    windows = read_windows(store, np.array([0, 1, 250, 499]), 250, 125)
    reference = _direct(_tiny_from(encoder), windows)
    got = _embeddings(table)
    for i, vector in reference.items():
        np.testing.assert_allclose(got[i], vector, rtol=1e-5, atol=1e-6)
    assert summary["windows"] == int(table.column("windows").to_numpy().sum()) == 7 * len(store)

    per_window = run_json(capsys, "embed", "--encoder", encoder, "--store", ptbxl_store, "--out", tmp_path / "w.parquet",
                          "--pool", "windows", "--folds", "10")
    rows = pq.read_table(tmp_path / "w.parquet")
    test = np.flatnonzero(store.records["fold"].to_numpy() == 10)
    assert per_window["records"] == len(test) and rows.num_rows == per_window["rows"] == 7 * len(test)
    assert rows.column("window_index").to_pylist() == list(range(7)) * len(test)
    assert rows.column("start").to_pylist() == [125 * k for k in range(7)] * len(test)
    # the per-window rows average to the per-record rows
    pooled = _embeddings(rows).reshape(len(test), 7, 16).mean(1)
    np.testing.assert_allclose(pooled, got[test], rtol=1e-5, atol=1e-6)


def _tiny_from(path: Path) -> TinyEncoder:
    encoder = TinyEncoder()
    encoder.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    return encoder.eval()


def test_ten_thousand_records_over_many_read_tasks(ray_session, tiny_encoder, tmp_path):
    """Every record exactly once, in store order, over 5 read tasks and 2 actors; too-short ones listed."""
    n = 10_500
    lengths = [int(x) for x in np.random.default_rng(1).integers(8, 48, n)]  # 16-sample windows: ~1/5 too short
    store_path = grouped_store(tmp_path / "many", {"A": n // 2, "B": n - n // 2}, lengths=lengths)
    store = EcgStore(store_path)
    out = tmp_path / "many.parquet"
    summary = embed_store(_source(), store, str(out), window=16, stride=8, batch_size=512, workers=2,
                          records_per_read=2000, progress=False)
    short = np.flatnonzero(np.array(lengths) < 16)
    kept = np.flatnonzero(np.array(lengths) >= 16)
    assert summary["read_tasks"] == -(-len(kept) // 2000) >= 4 and summary["workers"] == 2
    assert summary["too_short"]["count"] == len(short)
    assert summary["too_short"]["first_ids"] == [f"r{i:06d}" for i in short[:10]]
    table = pq.read_table(out)
    index = table.column("record_index").to_numpy()
    np.testing.assert_array_equal(index, kept)  # each kept record once, in order
    assert table.column("record_id").to_pylist() == [f"r{i:06d}" for i in kept]
    assert table.column("fold").to_pylist() == [1 + i % 10 for i in kept]
    expected_windows = (np.array(lengths)[kept] - 16) // 8 + 1
    np.testing.assert_array_equal(table.column("windows").to_numpy(), expected_windows)
    meta = read_metadata(str(out))
    assert meta["too_short"]["ids"] == [f"r{i:06d}" for i in short] and meta["window"] == 16
    # records at the task boundaries and elsewhere, against a direct pass of the same encoder
    positions = np.array([0, 1, 1679, 1680, 1681, len(kept) // 2, len(kept) - 1])  # tasks of ~1680 records
    windows = read_windows(store, kept[positions], 16, 8)
    reference = _direct(_source().build(), windows)
    got = _embeddings(table)
    for p in positions:
        np.testing.assert_allclose(got[p], reference[int(kept[p])], rtol=1e-5, atol=1e-6)


def test_records_are_resampled_to_the_encoders_rate(ray_session, tiny_encoder, tmp_path):
    lengths = [40, 64, 65, 200, 31, 33]
    store = EcgStore(grouped_store(tmp_path / "s200", {"A": len(lengths)}, lengths=lengths, fs=200.0))
    out = tmp_path / "r.parquet"
    summary = embed_store(_source(input_length=16), store, str(out), stride=8, progress=False)
    # 200 -> 100 Hz halves every record: 31 samples become 16 (one window), 33 -> 17
    assert summary["store_fs"] == 200.0 and summary["fs"] == 100.0 and summary["too_short"]["count"] == 0
    resampled = [resample(store.signal(i), 200.0, 100.0).astype(np.float32) for i in range(len(lengths))]
    windows = cut_windows(resampled, np.arange(len(lengths)), 16, 8)
    reference = _direct(_source().build(), windows)
    got = _embeddings(pq.read_table(out))
    for i in range(len(lengths)):
        np.testing.assert_allclose(got[i], reference[i], rtol=1e-5, atol=1e-6)
    # a lead subset: the other leads zeroed before the encoder, as evaluation's data.leads
    subset = embed_store(_source(input_length=16), store, str(tmp_path / "l.parquet"), stride=8, progress=False,
                         leads=["ii", "V1"])
    assert subset["leads"] == ["II", "V1"] and read_metadata(str(tmp_path / "l.parquet"))["leads"] == ["II", "V1"]
    kept = np.zeros(12, bool)
    kept[[1, 6]] = True
    zeroed = cut_windows(resampled, np.arange(len(lengths)), 16, 8)
    reference = _direct(_source().build(), type(zeroed)(np.where(kept[None, :, None], zeroed.signal, 0),
                                                        zeroed.record_index, zeroed.window_index))
    got = _embeddings(pq.read_table(tmp_path / "l.parquet"))
    for i in range(len(lengths)):
        np.testing.assert_allclose(got[i], reference[i], rtol=1e-5, atol=1e-6)


def test_a_failed_run_leaves_nothing_and_keeps_the_old_file(ray_session, tiny_encoder, tmp_path):
    store = EcgStore(grouped_store(tmp_path / "s", {"A": 6000}, length=20))
    out = tmp_path / "out" / "emb.parquet"
    embed_store(_source(), store, str(out), window=16, stride=4, progress=False, folds=[1])
    before = out.read_bytes()
    with pytest.raises(Exception, match="planned failure"):
        embed_store(_source("failing_test_encoder"), store, str(out), window=16, stride=4, overwrite=True,
                    progress=False, records_per_read=1000)
    assert out.read_bytes() == before  # the old file stays whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["emb.parquet"]  # no staging file left
    fresh = tmp_path / "out" / "new.parquet"
    with pytest.raises(Exception, match="planned failure"):
        embed_store(_source("failing_test_encoder"), store, str(fresh), window=16, stride=4, progress=False,
                    records_per_read=1000)
    assert sorted(p.name for p in out.parent.iterdir()) == ["emb.parquet"]


def test_existing_files_are_replaced_only_when_asked_and_only_if_ours(ptbxl_store, tiny_encoder, tmp_path, capsys):
    encoder = _encoder_file(tmp_path / "tiny.pt")
    other = tmp_path / "notes.parquet"
    other.write_text("not embeddings")
    code = main(["embed", "--encoder", str(encoder), "--store", str(ptbxl_store), "--out", str(other)])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    code = main(["embed", "--encoder", str(encoder), "--store", str(ptbxl_store), "--out", str(other), "--overwrite"])
    assert code == 2 and "not an ecg_ray embeddings file" in capsys.readouterr().err
    assert other.read_text() == "not embeddings"
    code = main(["embed", "--encoder", str(encoder), "--store", str(ptbxl_store), "--out", str(tmp_path / "e.parquet"),
                 "--window", "2000"])
    assert code == 2 and "no record" in capsys.readouterr().err  # every 10 s record is too short for 20 s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.parquet", "tiny.pt"]
