"""Bad input made from copies of the real samples: every problem is named, skipped or fatal as asked."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecg_ray.cli import main
from ecg_ray.data.prepare import prepare_store
from ecg_ray.data.sources.arrays import ArraySource
from ecg_ray.data.sources.cinc import CincSource
from ecg_ray.data.sources.ptbxl import PtbxlSource
from ecg_ray.data.store import EcgStore
from ecg_ray.errors import RecordError, SourceError

IDS = list(range(1, 11))


def _copy_ptbxl(src: Path, dst: Path, ids=IDS) -> Path:
    (dst / "records100/00000").mkdir(parents=True)
    db = pd.read_csv(src / "ptbxl_database.csv", index_col="ecg_id").loc[ids]
    db.to_csv(dst / "ptbxl_database.csv")
    shutil.copy(src / "scp_statements.csv", dst)
    for i in ids:
        for ext in (".hea", ".dat"):
            shutil.copy(src / f"records100/00000/{i:05d}_lr{ext}", dst / f"records100/00000/{i:05d}_lr{ext}")
    return dst


def _rewrite_leads(record: Path, keep: list[int], names: list[str]) -> None:
    """Rewrite a WFDB record with a chosen set of lead columns and names (real samples)."""
    signal, fields = wfdb.rdsamp(str(record))
    cols = signal[:, keep]
    wfdb.wrsamp(record.name, fs=fields["fs"], units=["mV"] * len(keep), sig_name=names, p_signal=cols,
                fmt=["16"] * len(keep), adc_gain=[1000.0] * len(keep), baseline=[0] * len(keep),
                write_dir=str(record.parent))


@pytest.fixture()
def broken_ptbxl(ptbxl_dir, tmp_path) -> Path:
    root = _copy_ptbxl(ptbxl_dir, tmp_path / "ptbxl")
    rec = root / "records100/00000"
    dat = rec / "00001_lr.dat"
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])  # 1: truncated
    data = bytearray((rec / "00002_lr.dat").read_bytes())  # 2: corrupted in the middle
    data[5000:5010] = bytes(b ^ 0x5A for b in data[5000:5010])
    (rec / "00002_lr.dat").write_bytes(bytes(data))
    hea = (rec / "00003_lr.hea").read_text().splitlines()  # 3: header rate disagrees with the data
    first = hea[0].split()
    first[2] = "250"
    (rec / "00003_lr.hea").write_text("\n".join([" ".join(first), *hea[1:]]) + "\n")
    _rewrite_leads(rec / "00004_lr", list(range(11)),  # 4: missing lead V6
                   ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5"])
    _rewrite_leads(rec / "00005_lr", list(range(12)),  # 5: unknown lead name
                   ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "X6"])
    _rewrite_leads(rec / "00006_lr", list(range(12)) + [11],  # 6: an extra (13th) lead
                   ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6", "V7"])
    db = pd.read_csv(root / "ptbxl_database.csv")  # 7: empty label set
    db.loc[db["ecg_id"] == 7, "scp_codes"] = "{}"
    db.to_csv(root / "ptbxl_database.csv", index=False)
    (rec / "00008_lr.dat").unlink()  # 8: signal file missing
    return root


EXPECTED = {"1": "truncated", "2": "checksum mismatch", "3": "250", "4": "missing lead",
            "5": "unknown lead", "6": "extra lead", "7": "empty label set", "8": "not found"}


def test_skip_lists_every_bad_record_with_file_and_reason(broken_ptbxl, tmp_path):
    manifest = prepare_store([PtbxlSource(broken_ptbxl)], tmp_path / "store", workers=1, progress=False)
    skipped = {s["id"]: s for s in manifest["skipped"]}
    assert set(skipped) == set(EXPECTED)
    for record_id, reason in EXPECTED.items():
        assert reason in skipped[record_id]["reason"], skipped[record_id]
        assert f"{int(record_id):05d}_lr" in skipped[record_id]["file"]
    assert manifest["records"] == 2  # 9 and 10 are intact
    assert EcgStore(tmp_path / "store").records["id"].tolist() == ["9", "10"]


def test_fail_stops_at_first_bad_record_and_leaves_no_store(broken_ptbxl, tmp_path):
    with pytest.raises(RecordError, match="truncated") as info:
        prepare_store([PtbxlSource(broken_ptbxl)], tmp_path / "store", on_error="fail", workers=2, progress=False)
    assert "00001_lr.dat" in str(info.value)
    assert list(tmp_path.iterdir()) == [broken_ptbxl]  # neither a store nor a partial directory


def test_cli_summary_shows_skipped(broken_ptbxl, tmp_path, capsys):
    assert main(["prepare", "ptbxl", str(broken_ptbxl), "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipped     8" in out and "00001_lr.dat: truncated" in out
    assert main(["prepare", "ptbxl", str(broken_ptbxl), "--out", str(tmp_path / "t"), "--no-progress",
                 "--on-error", "fail"]) == 2
    assert "truncated" in capsys.readouterr().err


def test_unreadable_csv_names_the_file(ptbxl_dir, tmp_path, capsys):
    root = _copy_ptbxl(ptbxl_dir, tmp_path / "p", ids=[1])
    (root / "ptbxl_database.csv").write_bytes(b"\x00\xff garbage,\n\x00")
    with pytest.raises(SourceError, match="ptbxl_database.csv"):
        PtbxlSource(root)
    assert main(["prepare", "ptbxl", str(root), "--out", str(tmp_path / "s")]) == 2
    assert "ptbxl_database.csv" in capsys.readouterr().err


def _copy_cinc(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir()
    for name in names:
        for ext in (".hea", ".mat"):
            shutil.copy(src / f"{name}{ext}", dst / f"{name}{ext}")
    return dst


def test_cinc_bad_records(cinc_dir, tmp_path):
    names = sorted(p.stem for p in cinc_dir.glob("*.hea"))[:5]
    root = _copy_cinc(cinc_dir, tmp_path / "cinc", names)
    mat = root / f"{names[0]}.mat"
    mat.write_bytes(mat.read_bytes()[:1000])  # truncated .mat
    lines = (root / f"{names[1]}.hea").read_text().splitlines()  # unknown sampling rate
    first = lines[0].split()
    first[2] = "7"
    (root / f"{names[1]}.hea").write_text("\n".join([" ".join(first), *lines[1:]]) + "\n")
    lines = (root / f"{names[2]}.hea").read_text().splitlines()  # empty label set
    (root / f"{names[2]}.hea").write_text("\n".join(ln if not ln.startswith("# Dx") else "# Dx:" for ln in lines) + "\n")
    manifest = prepare_store([CincSource(root)], tmp_path / "store", workers=1, progress=False)
    reasons = {s["id"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == set(names[:3])
    assert "truncated" in reasons[names[0]] or "cannot read" in reasons[names[0]]
    assert "sampling rate" in reasons[names[1]]
    assert "empty label set" in reasons[names[2]]
    assert manifest["records"] == 2


def test_nan_and_inf_samples_in_user_arrays(tmp_path):
    data = np.random.default_rng(0).normal(size=(4, 1000, 12)).astype(np.float32)
    data[1, 10, 3] = np.nan
    data[2, 20, 5] = np.inf
    np.save(tmp_path / "x.npy", data)
    manifest = prepare_store([ArraySource(tmp_path / "x.npy", fs=100)], tmp_path / "s", workers=1, progress=False)
    reasons = {s["id"]: s["reason"] for s in manifest["skipped"]}
    assert len(reasons) == 2 and manifest["records"] == 2
    assert any("NaN" in r for r in reasons.values()) and any("inf" in r for r in reasons.values())
    assert all("x.npy" in s["file"] for s in manifest["skipped"])
