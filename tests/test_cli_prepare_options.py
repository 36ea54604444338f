"""``ecg-ray prepare`` refuses options its source kind would silently ignore, in one line, before reading.

Every case names a source path that does not exist and an ``--out`` that must stay absent: the
refusal has to come before any input is looked at or any output is made.
"""

from __future__ import annotations

import pytest

from ecg_ray.cli import main
from ecg_ray.cli.data_commands import KIND_OPTIONS

CASES = [
    (["cinc", "SRC", "--record-list", "list.csv"], "prepare cinc does not read --record-list (wfdb): remove it"),
    (["ptbxl", "SRC", "--labels", "labels.csv"], "prepare ptbxl does not read --labels (numpy/wfdb): remove it"),
    (["numpy", "SRC", "--fs", "500", "--dataset", "mine"], "prepare numpy does not read --dataset (wfdb): remove it"),
    (["synthetic", "--rate", "500", "--exams-csv", "e.csv"],
     "prepare synthetic does not read --rate (ptbxl), --exams-csv (code15): remove them"),
    (["code15", "SRC", "--fs", "400", "--layout", "NCT"],
     "prepare code15 does not read --fs (numpy), --layout (numpy): remove them"),
    (["wfdb", "SRC", "--records", "10", "--classes", "AF", "--seed", "1"],
     "prepare wfdb does not read --records (synthetic), --classes (synthetic), --seed (synthetic): remove them"),
    (["ptbxl", "SRC", "--ptbxl-db", "db.csv"], "--ptbxl-db is only read for --exclude-ptbxl-folds: give both, or neither"),
    (["ptbxl", "SRC", "--workers", "3", "--ray"],
     "--workers sizes the local process pool, but this prepare runs in Ray tasks (--ray, or RAY_ADDRESS naming a "
     "cluster), one per CPU of the cluster: remove --workers"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[f"{a[0]} {next(x for x in a if x.startswith('--'))}" for a, _ in CASES])
def test_foreign_option_refused_in_one_line_before_reading(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = [str(tmp_path / "absent") if a == "SRC" else a for a in args]
    out = tmp_path / "store"
    assert main(["prepare", *args, "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"ecg-ray prepare: error: {message}"]
    assert not out.exists()


def test_workers_refused_when_ray_address_names_a_cluster(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # never contacted: refused first
    assert main(["prepare", "synthetic", "--workers", "2", "--out", str(tmp_path / "s")]) == 2
    assert "this prepare runs in Ray tasks" in capsys.readouterr().err


def test_every_kind_option_exists_and_its_own_kind_accepts_it():
    """The table names real parser options; giving an option to a kind it lists passes the check."""
    from ecg_ray.cli import build_parser
    from ecg_ray.cli.data_commands import check_kind_options

    parser = build_parser()
    values = {"rate": "500", "fs": "250", "labels": "l.csv", "record_list": "r.csv", "dataset": "x", "layout": "NCT",
              "exams_csv": "e.csv", "records": "7", "classes": "AF", "seed": "3"}
    assert values.keys() == KIND_OPTIONS.keys()
    for dest, kinds in KIND_OPTIONS.items():
        for kind in kinds:
            args = parser.parse_args(["prepare", kind, "--out", "o", f"--{dest.replace('_', '-')}", values[dest]])
            assert getattr(args, dest) != parser.parse_args(["prepare", kind, "--out", "o"]).__dict__[dest]
            check_kind_options(args)  # no error
