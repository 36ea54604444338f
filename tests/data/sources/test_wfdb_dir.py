"""``prepare wfdb``: WFDB trees rewritten from the PTB-XL sample in other layouts, lead orders and formats.

Each tree holds the PTB-XL sample's own digital samples, rewritten with ``wfdb.wrsamp`` under other
names (MIMIC-IV-ECG's nested ``files/pNNNN/pNNNNNNNN/sNNNNNNNN/NNNNNNNN`` with a ``record_list.csv``;
a flat directory), with leads permuted and renamed in other cases, in formats 16, 24 and 212. The
store's signals must equal what ``prepare ptbxl`` stores for the same records: bit for bit for
formats 16 and 24 (same integers, same gain); for 212 the samples are requantized to 12 bits at
gain 200/mV, so they agree within half a step (0.0025 mV) plus float32 rounding.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from ecg_ray.data.prepare import prepare_store
from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.data.sources.base import stable_fold
from ecg_ray.data.sources.ptbxl import PtbxlSource
from ecg_ray.data.sources.wfdb_dir import (
    WfdbSource,
    normalize_record_path,
    patient_from_path,
    record_ids,
)
from ecg_ray.data.store import EcgStore
from ecg_ray.errors import SourceError
from tests.cli import run_json

FORMATS_100HZ = ("16", "24", "212")
HALF_STEP_212 = 0.5 / 200 + 1e-5  # mV: rounding to 12 bits at gain 200, then float32


def _ptbxl_record(ptbxl_dir: Path, ecg_id: int, rate: int):
    folder = "records100" if rate == 100 else "records500"
    suffix = "lr" if rate == 100 else "hr"
    return wfdb.rdrecord(str(ptbxl_dir / folder / "00000" / f"{ecg_id:05d}_{suffix}"), physical=False)


def _rewrite(source, directory: Path, name: str, fmt: str, rng: np.random.Generator,
             drop: str | None = None) -> list[str]:
    """Write ``source``'s samples as record ``directory/name`` in ``fmt``, leads shuffled and renamed."""
    upper = [lead.upper() for lead in CANONICAL_LEADS]
    names = [CANONICAL_LEADS[upper.index(n.upper())] for n in source.sig_name]  # PTB-XL writes AVR
    order = rng.permutation(len(names))
    if drop is not None:
        order = np.array([i for i in order if names[i] != drop])
    digital = source.d_signal[:, order].astype(np.int64)
    gains = [float(source.adc_gain[i]) for i in order]
    if fmt == "212":  # 12 bits: 1000/mV would overflow, so requantize to 200/mV
        digital = np.round(digital * 0.2).astype(np.int64)
        gains = [g * 0.2 for g in gains]
        assert np.abs(digital).max() < 2047
    spelled = [(str.lower, str.upper, str)[int(rng.integers(3))](names[i]) for i in order]
    directory.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=source.fs, units=["mV"] * len(order), sig_name=spelled, d_signal=digital,
                fmt=[fmt] * len(order), adc_gain=gains, baseline=[int(source.baseline[i]) for i in order],
                write_dir=str(directory))
    return spelled


@pytest.fixture(scope="module")
def mimic_tree(ptbxl_dir, tmp_path_factory):
    """24 records as MIMIC-IV-ECG lays them out: ecg 1-16 at 100 Hz (formats 16/24/212), 1-8 at 500 Hz.

    subject_id = 10000000 + PTB-XL patient, study_id = 40000000 + ecg (45000000 + ecg at 500 Hz), so a
    patient's 100 and 500 Hz records are two studies of one subject. record_list.csv lists them shuffled.
    """
    root = tmp_path_factory.mktemp("mimic")
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id")
    rng = np.random.default_rng(12)
    rows = []
    for rate, ecg_ids, study_base in ((100, range(1, 17), 40_000_000), (500, range(1, 9), 45_000_000)):
        for ecg_id in ecg_ids:
            subject = 10_000_000 + int(db.at[ecg_id, "patient_id"])
            study = study_base + ecg_id
            path = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
            fmt = FORMATS_100HZ[ecg_id % 3] if rate == 100 else "16"
            _rewrite(_ptbxl_record(ptbxl_dir, ecg_id, rate), root / Path(path).parent, str(study), fmt, rng)
            rows.append({"subject_id": subject, "study_id": study, "file_name": f"{study}",
                         "ecg_time": f"2180-07-{1 + ecg_id % 28:02d} 10:{ecg_id:02d}:00", "path": path,
                         "ecg_id": ecg_id, "rate": rate, "fmt": fmt})
    listing = pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)
    listing.drop(columns=["ecg_id", "rate", "fmt"]).to_csv(root / "record_list.csv", index=False)
    return root, listing


def _reference(ptbxl_dir: Path, ecg_id: int, rate: int) -> np.ndarray:
    """What ``prepare ptbxl`` stores for one record (its reader's output is written verbatim)."""
    return PtbxlSource(ptbxl_dir, rate=rate).read(ecg_id).signal


def test_mimic_layout_with_record_list_equals_prepare_ptbxl(mimic_tree, ptbxl_dir, tmp_path):
    root, listing = mimic_tree
    assert {wfdb.rdheader(str(root / p)).fmt[0] for p in listing["path"]} == {"16", "24", "212"}
    out = tmp_path / "mimic.zarr"
    prepare_store([WfdbSource(root, record_list=root / "record_list.csv")], out, workers=2, progress=False)
    store = EcgStore(out)
    records = store.records
    # The record list's order, ids = record names (study ids), and its other columns as metadata.
    assert records["id"].tolist() == [str(s) for s in listing["study_id"]]
    assert records["patient_id"].tolist() == [str(s) for s in listing["subject_id"]]
    assert records["subject_id"].tolist() == [str(s) for s in listing["subject_id"]]
    assert records["study_id"].tolist() == listing["study_id"].tolist()
    assert records["ecg_time"].tolist() == listing["ecg_time"].tolist()
    assert records["path"].tolist() == listing["path"].tolist()
    assert records["fold"].tolist() == [stable_fold(str(s)) for s in listing["subject_id"]]
    assert records["fs_original"].tolist() == listing["rate"].astype(float).tolist()
    assert set(records["dataset"]) == {"wfdb"}
    for index, row in listing.iterrows():
        expected = _reference(ptbxl_dir, int(row["ecg_id"]), int(row["rate"]))
        actual = store.signal(index)
        if row["fmt"] == "212":
            np.testing.assert_allclose(actual, expected, rtol=0, atol=HALF_STEP_212)
        else:
            np.testing.assert_array_equal(actual, expected)
    source = store.manifest["sources"][0]
    assert source["kind"] == "wfdb" and source["record_list"] == str(root / "record_list.csv")
    assert source["records_listed"] == 24 and store.manifest["skipped"] == []


def test_scan_without_record_list_takes_patients_from_p_directories(mimic_tree, ptbxl_dir):
    root, listing = mimic_tree
    source = WfdbSource(root)
    refs = source.refs()
    assert [r.path for r in refs] == sorted(listing["path"])  # every .hea, record_list.csv ignored
    subject_of = dict(zip(listing["path"], listing["subject_id"].astype(str), strict=True))
    # The deepest p<digits> directory (p10015709, not p1001) gives MIMIC's subject_id.
    assert [r.patient_id for r in refs] == [subject_of[r.path] for r in refs]
    assert [r.id for r in refs] == [Path(r.path).name for r in refs]
    row = listing[listing["rate"] == 500].iloc[0]
    record = source.read(next(r for r in refs if r.path == row["path"]))
    assert record.fs_original == 500.0 and record.metadata["patient_id"] == str(row["subject_id"])
    np.testing.assert_array_equal(record.signal, _reference(ptbxl_dir, int(row["ecg_id"]), 500))


def test_labels_join_on_path_with_onehot_columns(mimic_tree):
    root, listing = mimic_tree
    paths = listing["path"].tolist()
    spelled = [f"./{p}.hea" if i % 2 else p for i, p in enumerate(paths[:-1])]  # the last record has no row
    table = pd.DataFrame({"path": spelled, "label_AF": [i % 2 for i in range(len(spelled))],
                          "label_NORM": [1 - i % 2 for i in range(len(spelled))],
                          "fold": [1 + i % 10 for i in range(len(spelled))], "site": "x"})
    table = pd.concat([table, pd.DataFrame({"path": ["files/p9/p9/s1/1"], "label_AF": [1], "label_NORM": [0],
                                            "fold": [3], "site": "y"})])  # names no record
    table.to_csv(root.parent / "path_labels.csv", index=False)
    source = WfdbSource(root, record_list=root / "record_list.csv", labels_csv=root.parent / "path_labels.csv")
    assert source.label_names() == ["AF", "NORM"]
    assert source.describe()["labels_unmatched_rows"] == 1
    refs = source.refs()
    assert [r.labels for r in refs[:4]] == [("NORM",), ("AF",), ("NORM",), ("AF",)]
    assert [r.fold for r in refs[:-1]] == [1 + i % 10 for i in range(len(refs) - 1)]
    assert refs[-1].problem is not None and "no row" in refs[-1].problem
    record = source.read(refs[1])
    assert record.metadata["site"] == "x" and record.metadata["subject_id"] == str(listing["subject_id"][1])


@pytest.fixture(scope="module")
def flat_tree(ptbxl_dir, tmp_path_factory):
    """ecg 1-20 at 100 Hz as ``NNNNN_lr`` in one directory (format 16), plus the odd ones out:
    ``dup/00003_lr`` (ecg 21 under a stem that is taken), ``odd/missing_v6`` (11 leads) and
    ``multi`` (a two-segment record of 00001_lr and 00002_lr)."""
    root = tmp_path_factory.mktemp("flat")
    rng = np.random.default_rng(5)
    for ecg_id in range(1, 21):
        _rewrite(_ptbxl_record(ptbxl_dir, ecg_id, 100), root, f"{ecg_id:05d}_lr", "16", rng)
    _rewrite(_ptbxl_record(ptbxl_dir, 21, 100), root / "dup", "00003_lr", "16", rng)
    _rewrite(_ptbxl_record(ptbxl_dir, 22, 100), root / "odd", "missing_v6", "16", rng, drop="V6")
    (root / "multi.hea").write_text("multi/2 12 100 2000\n00001_lr 1000\n00002_lr 1000\n")
    return root


def test_cli_flat_directory_labels_duplicates_and_bad_records(flat_tree, ptbxl_store, tmp_path, capsys):
    root = flat_tree
    stems = [f"{i:05d}_lr" for i in range(1, 20)]  # 00020_lr gets no labels row
    ids = stems + ["dup/00003_lr", "missing_v6", "multi", "not_a_record"]
    labels = ["NORM;MI" if i % 3 == 0 else "NORM" for i in range(len(ids))]
    patients = [f"pat{i // 2}" if i % 4 else "" for i in range(len(ids))]  # empty: falls back to the id
    pd.DataFrame({"id": ids, "labels": labels, "patient_id": patients}).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "flat.zarr"
    summary = run_json(capsys, "prepare", "wfdb", root, "--out", out, "--labels", tmp_path / "labels.csv",
                       "--workers", "2", "--no-progress")

    skipped = {s["id"]: s for s in summary["skipped"]}
    assert set(skipped) == {"00020_lr", "missing_v6", "multi"}
    assert "no row for this record in labels CSV" in skipped["00020_lr"]["reason"]
    assert skipped["missing_v6"]["reason"] == "missing lead(s) ['V6']"
    assert skipped["missing_v6"]["file"] == str(root / "odd" / "missing_v6.hea")
    assert skipped["multi"]["reason"].startswith("multi-segment record (2 segments)")
    assert summary["records"] == 20  # 19 labelled + dup/00003_lr

    store = EcgStore(out)
    records = store.records.set_index("id")
    # Duplicate stems: both records named by their relative path; every other record by its stem.
    assert "00003_lr" in records.index and "dup/00003_lr" in records.index
    assert sorted(records.index) == sorted(stems + ["dup/00003_lr"])
    reference = EcgStore(ptbxl_store)
    ref_index = {rid: i for i, rid in enumerate(reference.records["id"])}
    position = {rid: i for i, rid in enumerate(store.records["id"])}
    for stem in stems:
        np.testing.assert_array_equal(store.signal(position[stem]), reference.signal(ref_index[str(int(stem[:5]))]))
    np.testing.assert_array_equal(store.signal(position["dup/00003_lr"]), reference.signal(ref_index["21"]))
    # Labels and patient ids from the CSV, falling back to the record id where the cell is empty.
    row_of = {rid: i for i, rid in enumerate(ids)}
    matrix = store.label_matrix()
    assert store.label_names == ["MI", "NORM"]
    for rid, position_ in position.items():
        i = row_of[rid]
        assert matrix[position_].tolist() == [int("MI" in labels[i]), 1]
        assert records.at[rid, "patient_id"] == (patients[i] or rid)
    assert store.manifest["sources"][0]["labels_unmatched_rows"] == 1


def test_record_list_and_labels_errors_name_the_file(mimic_tree, tmp_path):
    root, listing = mimic_tree
    csv = tmp_path / "list.csv"
    cases = [
        (pd.DataFrame({"file": ["a"]}), r"list\.csv: record list needs a 'path' column"),
        (pd.DataFrame({"path": [listing["path"][0], listing["path"][0] + ".hea"]}), r"list\.csv: duplicate path"),
        (pd.DataFrame({"path": ["../elsewhere/1"]}), r"list\.csv: row 0: path '\.\./elsewhere/1' must be relative"),
        (pd.DataFrame({"path": [listing["path"][0]], "dataset": ["mimic"]}), r"list\.csv: column\(s\) \['dataset'\]"),
    ]
    for table, message in cases:
        table.to_csv(csv, index=False)
        with pytest.raises(SourceError, match=message):
            WfdbSource(root, record_list=csv)
    with pytest.raises(SourceError, match=r"nothing\.csv: record list not found"):
        WfdbSource(root, record_list=tmp_path / "nothing.csv")
    pd.DataFrame({"labels": ["AF"]}).to_csv(csv, index=False)
    with pytest.raises(SourceError, match=r"list\.csv: labels CSV needs a 'path' column .* or an 'id' column"):
        WfdbSource(root, labels_csv=csv)
    pd.DataFrame({"path": ["a/1", "./a/1.hea"], "labels": ["AF", "NORM"]}).to_csv(csv, index=False)
    with pytest.raises(SourceError, match=r"list\.csv: duplicate path\(s\) \['a/1'\]"):
        WfdbSource(root, labels_csv=csv)
    pd.DataFrame({"id": ["nope"], "labels": ["AF"]}).to_csv(csv, index=False)
    with pytest.raises(SourceError, match=r"list\.csv: no id in the labels CSV matches a record"):
        WfdbSource(root, labels_csv=csv)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no .hea files under"):
        WfdbSource(tmp_path / "empty")


def test_cli_refuses_two_directories_in_one_line(mimic_tree, tmp_path, capsys):
    from ecg_ray.cli import main

    root, _ = mimic_tree
    assert main(["prepare", "wfdb", str(root), str(root), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "ecg-ray prepare: error: prepare wfdb takes exactly one directory"]


def test_pickled_source_is_small_and_lists_the_same_refs(mimic_tree, ptbxl_dir):
    root, listing = mimic_tree
    source = WfdbSource(root, record_list=root / "record_list.csv")
    refs = source.refs()
    blob = pickle.dumps(source)
    assert len(blob) < 2000  # no per-record data: each reference travels with its own job
    clone = pickle.loads(blob)
    assert clone._refs is None and clone.refs() == refs
    row = listing.iloc[0]
    np.testing.assert_array_equal(clone.read(refs[0]).signal, WfdbSource(root).read(
        next(r for r in WfdbSource(root).refs() if r.path == row["path"])).signal)


def test_naming_rules():
    assert normalize_record_path(" ./files/p1/s2/2.hea ") == "files/p1/s2/2"
    assert normalize_record_path("a\\b\\c") == "a/b/c"
    assert patient_from_path("files/p1000/p10000032/s40689238/40689238") == "10000032"
    assert patient_from_path("p123/x/rec") == "123"
    assert patient_from_path("files/pa/s1/p42") is None  # the record's own name is not a directory
    assert record_ids(["a/1", "b/1", "b/2", "3"]) == ["a/1", "b/1", "2", "3"]
    assert record_ids(["1", "x/1"]) == ["1", "x/1"]


def test_bench_script_runs_and_reports(ptbxl_dir):
    """bench/wfdb_source.py (the 1M-record listing figure in bench/RESULTS.md) still runs, at a tiny size."""
    import re
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[3] / "bench" / "wfdb_source.py"
    proc = subprocess.run([sys.executable, str(bench), "--records", "3000", "--scan", "60", "--reads", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {name: dict(re.findall(r"(\w+)=([0-9.]+)", rest))
               for name, rest in re.findall(r"^RESULT (\S+) (.*)$", proc.stdout, re.M)}
    assert int(results["wfdb_listing"]["records"]) == 3000 and int(results["wfdb_scan"]["files"]) == 60
    assert float(results["wfdb_read"]["records_per_s"]) > 0
    assert int(results["wfdb_listing"]["pickled_source_bytes"]) < 2000


def test_cli_exclusions_verify_and_on_error_fail(mimic_tree, flat_tree, tmp_path, capsys):
    from ecg_ray.cli import main

    root, listing = mimic_tree
    first = listing[listing["study_id"] == 40_000_001].iloc[0]  # ecg 1: its subject has a 100 and a 500 Hz study
    (tmp_path / "patients.txt").write_text(f"{first['subject_id']}\n")
    out = tmp_path / "mimic.zarr"
    summary = run_json(capsys, "prepare", "wfdb", root, "--record-list", root / "record_list.csv", "--out", out,
                       "--exclude-patients", tmp_path / "patients.txt", "--workers", "2", "--no-progress")
    assert summary["records"] == 22 and summary["excluded"] == {"patient listed": 2}
    assert str(first["subject_id"]) not in set(EcgStore(out).records["patient_id"])
    assert run_json(capsys, "inspect", out, "--verify")["verified"] is True

    # --on-error fail: the first bad record in listing order (the two-segment "multi") stops the run,
    # named in one line, and nothing that opens as a store is left.
    failed = tmp_path / "failed.zarr"
    assert main(["prepare", "wfdb", str(flat_tree), "--out", str(failed), "--on-error", "fail", "--workers", "2",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ecg-ray prepare: error: {flat_tree / 'multi.hea'}: multi-segment record (2 segments) is not "
                   "supported: prepare its segments as single records (record multi)"]
    assert not failed.exists()


# -- age and sex from header comments; --dataset ---------------------------------------------------

# (comment lines, age, sex) as headers write them: PTB-XL/CinC style, INCART's bracketed keys on one line,
# abbreviations, units, and every way of saying "unknown" (which must give NaN / -1, never an error).
HEADER_DEMOGRAPHICS = [
    (["Age: 54", "Sex: Female", "Dx: 426783006"], 54.0, 1),
    (["Age: 71", "Sex: M"], 71.0, 0),
    (["<age>: 65 <sex>: F <diagnoses> Coronary artery disease, arterial hypertension"], 65.0, 1),
    (["age: 81", "sex: male"], 81.0, 0),
    (["Age: 37 years", "Sex:  f "], 37.0, 1),
    (["Age: NaN", "Sex: Unknown"], np.nan, -1),
    (["Age: -1", "Sex: ?"], np.nan, -1),
    (["Recorded at rest"], np.nan, -1),
    ([], np.nan, -1),
]


def _write_small_tree(root: Path, n_records: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``n_records`` 2 s, 100 Hz, 12-lead records (format 16) under ``root/gNN/``, their comments cycling
    through HEADER_DEMOGRAPHICS; returns their relative paths and the expected age and sex columns."""
    rng = np.random.default_rng(7)
    paths, ages, sexes = [], [], []
    for i in range(n_records):
        comments, age, sex = HEADER_DEMOGRAPHICS[i % len(HEADER_DEMOGRAPHICS)]
        directory = root / f"g{i // 25:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        digital = rng.integers(-2000, 2000, size=(200, 12))
        wfdb.wrsamp(f"r{i:05d}", fs=100, units=["mV"] * 12, sig_name=list(CANONICAL_LEADS), d_signal=digital,
                    fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, comments=list(comments),
                    write_dir=str(directory))
        paths.append(f"{directory.name}/r{i:05d}")
        ages.append(age)
        sexes.append(sex)
    return paths, np.array(ages, dtype=float), np.array(sexes, dtype=np.int64)


@pytest.fixture(scope="module")
def demographics_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("demographics")
    paths, ages, sexes = _write_small_tree(root, 180)
    return root, paths, ages, sexes


def test_comment_parser_reads_both_spellings():
    from ecg_ray.data.sources.wfdb_io import header_demographics, parse_comments

    assert parse_comments(["<age>: 65 <sex>: M <diagnoses> Coronary artery disease, arterial hypertension"]) == {
        "age": "65", "sex": "M", "diagnoses": "Coronary artery disease, arterial hypertension"}
    assert parse_comments(["Age: 54", "Sex: Female", "Dx: 164889003,59118001"]) == {
        "age": "54", "sex": "Female", "dx": "164889003,59118001"}
    for comments, age, sex in HEADER_DEMOGRAPHICS:
        parsed = header_demographics(parse_comments(comments))
        assert parsed["sex"] == sex and (np.isnan(parsed["age"]) if np.isnan(age) else parsed["age"] == age), comments


def test_header_age_and_sex_become_store_columns_in_a_pool(demographics_tree, tmp_path):
    root, paths, ages, sexes = demographics_tree
    out = tmp_path / "demo.zarr"
    prepare_store([WfdbSource(root)], out, workers=2, progress=False)
    records = EcgStore(out).records
    assert records["path"].tolist() == paths and len(records) == 180
    # The same column types as the PTB-XL and CinC readers: float years (NaN unknown), int 0/1 (-1 unknown).
    assert records["age"].dtype == np.float64 and records["sex"].dtype == np.int64
    np.testing.assert_array_equal(records["age"].to_numpy(), ages)  # NaN positions must match too
    np.testing.assert_array_equal(records["sex"].to_numpy(), sexes)


def test_wfdb_reader_gives_the_cinc_readers_age_and_sex(cinc_dir):
    from ecg_ray.data.sources.cinc import CincSource

    cinc = CincSource(cinc_dir)
    by_cinc = {r.id: r.metadata for r in map(cinc.read, cinc.refs())}
    wfdb_source = WfdbSource(cinc_dir)
    by_wfdb = {r.id: r.metadata for r in map(wfdb_source.read, wfdb_source.refs())}
    assert by_wfdb.keys() == by_cinc.keys() and len(by_cinc) == 50
    assert {m["sex"] for m in by_cinc.values()} == {0, 1}  # the sample has both, and ages 5-89
    for record_id, metadata in by_cinc.items():
        assert by_wfdb[record_id]["sex"] == metadata["sex"]
        np.testing.assert_equal(by_wfdb[record_id]["age"], metadata["age"])


def test_record_list_age_and_sex_columns_win_over_the_headers(demographics_tree, tmp_path):
    root, paths, ages, sexes = demographics_tree
    listed_age = [float(30 + i % 50) if i % 4 else np.nan for i in range(len(paths))]  # every 4th cell empty
    listed_sex = ["F" if i % 2 else "M" for i in range(len(paths))]
    pd.DataFrame({"path": paths, "age": listed_age, "sex": listed_sex}).to_csv(tmp_path / "list.csv", index=False)
    out = tmp_path / "listed.zarr"
    prepare_store([WfdbSource(root, record_list=tmp_path / "list.csv")], out, workers=2, progress=False)
    records = EcgStore(out).records
    # Cell for cell as the CSV has it, an empty cell included (no fall-back to the header: one column, one type).
    np.testing.assert_array_equal(records["age"].to_numpy(), np.array(listed_age))
    assert records["sex"].tolist() == listed_sex
    assert not np.array_equal(records["age"].to_numpy(), ages, equal_nan=True)  # the headers did say otherwise


def test_cli_dataset_names_the_records_and_bad_names_are_refused_first(demographics_tree, tmp_path, capsys):
    from ecg_ray.cli import main

    root, paths, _, _ = demographics_tree
    out = tmp_path / "named.zarr"
    summary = run_json(capsys, "prepare", "wfdb", root, "--dataset", "hr-2020", "--out", out, "--workers", "2",
                       "--no-progress")
    assert summary["per_dataset"] == {"hr-2020": 180}
    assert set(EcgStore(out).records["dataset"]) == {"hr-2020"}
    # Refused in one line before anything is read: the directory does not even exist.
    for name, message in (("", "--dataset must be a non-empty name"),
                          ("a/b", "--dataset 'a/b': use one word, without '/', '\\', ',' or spaces"),
                          ("my data", "--dataset 'my data': use one word, without '/', '\\', ',' or spaces")):
        assert main(["prepare", "wfdb", str(tmp_path / "absent"), "--dataset", name,
                     "--out", str(tmp_path / "s")]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"ecg-ray prepare: error: {message}"]
    with pytest.raises(SourceError, match="--dataset must be a non-empty name"):
        WfdbSource(root, dataset=" ")
    assert not (tmp_path / "s").exists()
