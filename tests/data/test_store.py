"""Store: atomic creation, verification, exclusions, inspect --json contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ecg_ray.cli import main
from ecg_ray.data.prepare import Exclusions, prepare_store
from ecg_ray.data.sources.base import Record, Source
from ecg_ray.data.sources.cinc import CincSource
from ecg_ray.data.sources.ptbxl import PtbxlSource
from ecg_ray.data.store import EcgStore
from ecg_ray.errors import StoreError


class _Interrupting(Source):
    """Yields a few good records, then the user presses Ctrl-C."""

    kind = "test"

    def refs(self):
        return list(range(10))

    def read(self, ref):
        if ref == 6:
            raise KeyboardInterrupt
        signal = np.full((300 + ref, 12), ref, dtype=np.float32)
        return Record(id=str(ref), dataset="t", file=f"t{ref}", signal=signal, fs=100.0, fs_original=100.0,
                      labels=["A"], metadata={"fold": 1 + ref % 10, "patient_id": str(ref)})


def test_interrupted_prepare_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        prepare_store([_Interrupting()], tmp_path / "s", workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StoreError, match="no such store"):
        EcgStore(tmp_path / "s")


def test_existing_store_is_not_overwritten_silently(ptbxl_store):
    with pytest.raises(StoreError, match="already exists"):
        prepare_store([_Interrupting()], ptbxl_store, workers=1, progress=False)


def test_variable_lengths_kept_whole(tmp_path):
    class Varying(_Interrupting):
        def read(self, ref):
            record = super().read(ref if ref != 6 else 5)
            record.id = str(ref)
            return record

    prepare_store([Varying()], tmp_path / "s", workers=1, progress=False, chunk_samples=1000)
    store = EcgStore(tmp_path / "s")
    for i in range(10):
        expected = 300 + (i if i != 6 else 5)
        assert store.signal(i).shape == (expected, 12)
        assert np.all(store.signal(i) == (i if i != 6 else 5))  # records cross chunk boundaries intact


def test_verify_detects_corruption(ptbxl_dir, tmp_path, capsys):
    src = tmp_path / "p"
    (src / "records100/00000").mkdir(parents=True)
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id").loc[1:20]
    db.to_csv(src / "ptbxl_database.csv")
    (src / "scp_statements.csv").write_bytes((ptbxl_dir / "scp_statements.csv").read_bytes())
    for i in range(1, 21):
        for ext in (".hea", ".dat"):
            name = f"records100/00000/{i:05d}_lr{ext}"
            (src / name).write_bytes((ptbxl_dir / name).read_bytes())
    store_dir = tmp_path / "s"
    prepare_store([PtbxlSource(src)], store_dir, workers=1, progress=False, codec="zstd")
    assert main(["inspect", str(store_dir), "--verify"]) == 0
    assert "all checksums match" in capsys.readouterr().out
    chunk = next(p for p in (store_dir / "signals").rglob("*") if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert EcgStore(store_dir).verify() == [f"{chunk.relative_to(store_dir).as_posix()}: checksum mismatch"]
    assert main(["inspect", str(store_dir), "--verify"]) == 1
    assert "VERIFY FAILED" in capsys.readouterr().out


def test_inspect_json_contract(ptbxl_store, capsys):
    assert main(["inspect", str(ptbxl_store), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["records"] == 500 and isinstance(summary["records"], int)
    assert summary["leads"] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert summary["fs"] == 100.0
    assert len(summary["label_names"]) == 71
    assert summary["per_fold"]["9"] == 81 and summary["per_dataset"] == {"ptbxl": 500}
    assert summary["skipped"] == [] and summary["bytes"] > 500 * 1000 * 12 * 4


def test_exclusion_by_dataset_and_ptbxl_patients(cinc_dir, tmp_path):
    ids = sorted(p.stem for p in cinc_dir.glob("HR*.hea"))
    # A PTB-XL database in which the first three HR records' patients sit in test fold 10, and
    # one of those patients also has a fold-1 record.
    ecg_ids = [int(i[2:]) for i in ids]
    db = pd.DataFrame({"ecg_id": ecg_ids, "patient_id": [float(1000 + k) for k in range(len(ids))],
                       "strat_fold": [10, 10, 10] + [1] * (len(ids) - 3)})
    db.loc[3, "patient_id"] = 1000.0  # same patient as the first record, other fold: also excluded
    db.to_csv(tmp_path / "ptbxl_database.csv", index=False)
    manifest = prepare_store([CincSource(cinc_dir)], tmp_path / "s", workers=1, progress=False,
                             exclusions=Exclusions(ptbxl_db=tmp_path / "ptbxl_database.csv", ptbxl_folds={10}))
    assert manifest["excluded"] == {"ptbxl patient in folds 10": 4}
    kept = set(EcgStore(tmp_path / "s").records["id"])
    assert not kept & set(ids[:4]) and set(ids[4:]) <= kept
    assert manifest["records"] == 46

    manifest = prepare_store([CincSource(cinc_dir)], tmp_path / "t", workers=1, progress=False,
                             exclusions=Exclusions(datasets={"ptbxl"}))
    assert manifest["excluded"] == {"dataset=ptbxl": 10} and "ptbxl" not in manifest["per_dataset"]


def test_exclusion_by_fold_on_ptbxl_itself(ptbxl_dir, tmp_path):
    manifest = prepare_store([PtbxlSource(ptbxl_dir)], tmp_path / "s", workers=2, progress=False,
                             exclusions=Exclusions(folds={9, 10}))
    assert manifest["records"] == 500 - 81 - 66
    assert manifest["excluded"] == {"fold=9": 81, "fold=10": 66}
