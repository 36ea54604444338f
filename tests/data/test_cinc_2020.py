"""Early CinC 2020 files (the first release: CPSC 2018 records A0001...) with abbreviated diagnoses.

The records are written here in that release's exact layout: a ``.mat`` (MATLAB v4, int16 ``val``
of shape (12, samples)) beside a header whose record line carries the date before the time
(``A0001 12 500 7500 05-Feb-2020 11:39:16``), signal lines ``A0001.mat 16+24 1000/mV ...`` and
comments without a space after ``#`` (``#Dx: RBBB``); 500 Hz, 12 leads, 10-60 s.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from ecg_ray.data.prepare import prepare_store
from ecg_ray.data.sources.base import label_sort_key
from ecg_ray.data.sources.cinc import CPSC2018_DX, CincSource, parse_dx, snomed_code
from ecg_ray.data.store import EcgStore

FS = 500
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]

# The nine diagnosis abbreviations of the first release -> SNOMED-CT, from the challenge's
# dx_mapping_scored.csv / dx_mapping_unscored.csv (physionetchallenges/evaluation-2020).
NINE = {"AF": "164889003", "I-AVB": "270492004", "LBBB": "164909002", "Normal": "426783006",
        "PAC": "284470004", "PVC": "164884008", "RBBB": "59118001", "STD": "429622005", "STE": "164931005"}

# id -> (duration in s, the #Dx value as written, expected labels, unmapped texts)
RECORDS = {
    "A0001": (30.0, "RBBB", ["59118001"], []),
    "A0002": (10.0, "Normal", ["426783006"], []),
    "A0003": (60.0, "AF", ["164889003"], []),
    "A0004": (23.4566, "I-AVB", ["270492004"], []),  # 11728.3 -> 11728 samples: not a whole 1/100 s
    "A0005": (17.2, "PAC,RBBB", ["59118001", "284470004"], []),
    "A0006": (44.0, "PVC", ["164884008"], []),
    "A0007": (12.5, "STD", ["429622005"], []),
    "A0008": (51.3, "STE", ["164931005"], []),
    "A0009": (35.0, "LBBB", ["164909002"], []),
    "A0010": (19.9, " i-avb ,  normal ,AF ", ["164889003", "270492004", "426783006"], []),
    "A0011": (28.0, "426783006,RBBB", ["59118001", "426783006"], []),  # mixed code + abbreviation
    "A0012": (15.0, "Brugada", ["Brugada"], ["Brugada"]),
    "A0013": (40.0, "AF, Brugada ,164889003", ["164889003", "Brugada"], ["Brugada"]),
    "A0014": (58.8, "59118001,early repol,STE", ["59118001", "164931005", "early repol"], ["early repol"]),
}


def write_early_cinc(root: Path, record_id: str, seconds: float, dx: str, seed: int) -> int:
    """One record in the first CinC 2020 release's format; returns its number of samples."""
    n = int(round(seconds * FS))
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    beats = np.sin(2 * np.pi * 1.2 * t)[:, None] * rng.uniform(200, 800, 12)  # ~0.2-0.8 mV
    digital = np.round(beats + rng.normal(0, 20, (n, 12))).astype("<i2")  # (samples, 12), 1000/mV
    # MATLAB v4 matrix 'val' (12 x n, int16, column-major): a 24-byte header, then the samples
    # frame by frame, i.e. exactly WFDB format 16 at byte offset 24.
    mat_header = struct.pack("<5i", 30, 12, n, 0, 4) + b"val\x00"
    (root / f"{record_id}.mat").write_bytes(mat_header + digital.tobytes())
    checksums = (digital.astype(np.int64).sum(axis=0) + 32768) % 65536 - 32768
    lines = [f"{record_id} 12 {FS} {n} 05-Feb-2020 11:39:16"]
    lines += [f"{record_id}.mat 16+24 1000/mV 16 0 {digital[0, j]} {checksums[j]} 0 {lead}"
              for j, lead in enumerate(LEADS)]
    lines += ["#Age: 74", "#Sex: Male", f"#Dx: {dx}", "#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]
    (root / f"{record_id}.hea").write_text("\n".join(lines) + "\n")
    return n


@pytest.fixture()
def early_cinc(tmp_path) -> tuple[Path, dict[str, int]]:
    root = tmp_path / "Training_WFDB"
    root.mkdir()
    lengths = {rid: write_early_cinc(root, rid, sec, dx, seed=i)
               for i, (rid, (sec, dx, _, _)) in enumerate(RECORDS.items())}
    return root, lengths


def test_mapping_of_the_nine_abbreviations():
    assert {k: CPSC2018_DX[k.upper()] for k in NINE} == NINE
    for text, code in NINE.items():
        for variant in (text, text.lower(), text.upper(), f"  {text}\t", text.swapcase()):
            assert snomed_code(variant) == code, variant
    assert snomed_code(" I - AVB ") == "270492004"  # whitespace inside is tolerated too
    assert snomed_code("426783006") == "426783006" and snomed_code(" 59118001 ") == "59118001"
    for text in ("Brugada", "IAVB", "NSR", "", "²"):
        assert snomed_code(text) is None, text
    assert parse_dx("426783006,RBBB") == (["59118001", "426783006"], [])
    assert parse_dx("Normal, 426783006 ,normal") == (["426783006"], [])
    assert parse_dx("Brugada,AF,Brugada, x ") == (["164889003", "Brugada", "x"], ["Brugada", "x"])
    assert parse_dx("²") == (["²"], ["²"]) and label_sort_key("²") == (1, 0, "²")  # no int() crash
    assert parse_dx("") == ([], []) and parse_dx(" , ,") == ([], [])


def test_reader_keeps_text_labels(early_cinc):
    root, _ = early_cinc
    source = CincSource(root)
    record = source.read(str(root / "A0013"))
    assert record.dataset == "cpsc" and record.labels == ["164889003", "Brugada"]
    assert record.unmapped_labels == ["Brugada"]
    assert record.metadata["age"] == 74 and record.metadata["sex"] == 0
    record = source.read(str(root / "A0011"))
    assert record.labels == ["59118001", "426783006"] and record.unmapped_labels == []


@pytest.mark.parametrize("fs", [100.0, 500.0])
def test_early_cinc_2020_store(early_cinc, tmp_path, caplog, fs):
    root, lengths = early_cinc
    with caplog.at_level(logging.WARNING, logger="ecg_ray.data.prepare"):
        manifest = prepare_store([CincSource(root, fs_out=fs)], tmp_path / "store", fs=fs, workers=2,
                                 progress=False)
    assert manifest["skipped"] == [] and manifest["records"] == len(RECORDS)
    assert manifest["per_dataset"] == {"cpsc": len(RECORDS)}

    store = EcgStore(tmp_path / "store")
    assert list(store.records["id"]) == list(RECORDS)
    labels = store.label_matrix()
    for i, row in store.records.iterrows():
        n = lengths[row["id"]]
        # whole record at the store's rate: not truncated to 10 s, not padded to 60 s
        assert row["length"] == math.ceil(n * fs / FS), row["id"]
        got = [name for name, v in zip(store.label_names, labels[i], strict=True) if v]
        assert got == RECORDS[row["id"]][2], row["id"]
    # codes in numeric order, then the kept texts
    codes = sorted({c for *_, expected, _ in RECORDS.values() for c in expected if c.isdigit()}, key=int)
    assert store.label_names == codes + ["Brugada", "early repol"]
    assert set(NINE.values()) <= set(store.label_names)

    expected = {"unmapped": {"Brugada": 2, "early repol": 1}, "records": 3, "total": 3}
    assert manifest["label_warnings"] == expected
    assert json.loads((tmp_path / "store" / "manifest.json").read_text())["label_warnings"] == expected
    assert store.summary()["label_warnings"] == expected
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("A0012" in m and "'Brugada'" in m for m in warned), warned  # first record with the text
    assert not any("A0013" in m for m in warned)  # once per text, not per record
    assert any("'early repol'" in m for m in warned)
    assert any("3 record(s)" in m and "'Brugada' x2" in m for m in warned), warned

    if fs == FS:  # no resampling: the stored samples are the file's, in mV
        first = np.frombuffer((root / "A0001.mat").read_bytes()[24:], "<i2").reshape(-1, 12)
        np.testing.assert_allclose(store.signal(0), first / 1000.0, atol=1e-6)


def test_empty_dx_still_skipped_and_clean_store_has_no_warnings(tmp_path):
    root = tmp_path / "cinc"
    root.mkdir()
    write_early_cinc(root, "A0001", 10.0, "RBBB", seed=1)
    write_early_cinc(root, "A0002", 10.0, "", seed=2)
    write_early_cinc(root, "A0003", 10.0, " , ", seed=3)
    manifest = prepare_store([CincSource(root)], tmp_path / "store", workers=1, progress=False)
    reasons = {s["id"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"A0002", "A0003"}
    assert all("empty label set" in r for r in reasons.values())
    assert manifest["records"] == 1 and manifest["label_names"] == ["59118001"]
    assert manifest["label_warnings"] == {"unmapped": {}, "records": 0, "total": 0}
