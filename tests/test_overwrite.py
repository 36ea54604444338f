"""Nothing a user owns is deleted or replaced (issue #16, "data loss").

``prepare --overwrite`` replaces only a complete ecg_ray store that neither holds nor lies inside
an input; ``export`` replaces only an encoder export; ``sweep --output`` writes only into a new,
empty or sweep directory; ``--output`` of a run is never a file; the demo cleans only its own
directory. Each refusal is checked through the CLI: exit status 2, one line on stderr naming the
path, and a sentinel file that is still there afterwards.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_ray import storage
from ecg_ray.cli import main
from ecg_ray.data.staging import OWNER_FILE
from ecg_ray.data.store import MANIFEST, EcgStore
from ecg_ray.data.store_writer import StoreWriter
from ecg_ray.errors import EcgRayError, StoreError
from ecg_ray.overwrite import check_output_dir, check_sweep_dir, relation
from tests.cli import run_json

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "my-notes.txt"


def refused(capsys, *args) -> str:
    """Run ``ecg-ray ARGS``: asserts exit status 2 and a one-line error; returns that line."""
    code = main([*map(str, args)])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def sentinel_in(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SENTINEL
    path.write_text("the user's own file\n")
    return path


def tree(directory: Path) -> list[str]:
    """Every path under ``directory`` (hidden ones included), to show nothing was added or removed."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture
def raw(tmp_path) -> Path:
    """A user's input directory: an array of 4 ECGs (the input) beside the user's notes."""
    directory = tmp_path / "raw"
    directory.mkdir()
    rng = np.random.default_rng(0)
    np.save(directory / "ecgs.npy", rng.normal(size=(4, 1000, 12)).astype(np.float32))
    sentinel_in(directory)
    return directory


def prepare_numpy(raw: Path, out: Path, *extra) -> list:
    return ["prepare", "numpy", raw / "ecgs.npy", "--fs", "100", "--out", out, "--no-progress", *extra]


def test_overwrite_refuses_a_directory_of_user_files(raw, tmp_path, capsys):
    mine = tmp_path / "mine"
    keep = sentinel_in(mine)
    before = tree(tmp_path)
    line = refused(capsys, *prepare_numpy(raw, mine, "--overwrite"))
    assert f"refusing to replace {mine}: it is a directory that is not an ecg_ray store" in line
    assert keep.read_text() == "the user's own file\n"
    assert tree(tmp_path) == before  # a refused prepare writes nothing (no partial store either)
    # without --overwrite the message says --overwrite would not help
    line = refused(capsys, *prepare_numpy(raw, mine))
    assert f"{mine} already exists and it is a directory that is not an ecg_ray store" in line
    assert "--overwrite would not replace it" in line


def test_overwrite_refuses_a_plain_file(raw, tmp_path, capsys):
    plain = tmp_path / "results.csv"
    plain.write_text("a,b\n1,2\n")
    line = refused(capsys, *prepare_numpy(raw, plain, "--overwrite"))
    assert f"refusing to replace {plain}: it is a file, not an ecg_ray store" in line
    assert plain.read_text() == "a,b\n1,2\n"
    # nor can a store be created below a file
    line = refused(capsys, *prepare_numpy(raw, plain / "store"))
    assert f"{plain} is a file, not a directory" in line


@pytest.mark.parametrize("target", ["input file", "input directory", "parent of the input", "grandparent"])
def test_overwrite_refuses_the_input_and_what_contains_it(target, raw, tmp_path, capsys):
    out = {"input file": raw / "ecgs.npy", "input directory": raw, "parent of the input": tmp_path,
           "grandparent": tmp_path.parent}[target]
    before = tree(raw)
    line = refused(capsys, *prepare_numpy(raw, out, "--overwrite"))
    relation_text = "is the input" if target == "input file" else "contains the input"
    assert f"refusing to replace {out}: it {relation_text} {raw / 'ecgs.npy'}" in line
    assert tree(raw) == before and (raw / SENTINEL).exists()


def test_overwrite_refuses_the_input_through_a_symlink(raw, tmp_path, capsys):
    link = tmp_path / "link-to-raw"
    link.symlink_to(raw, target_is_directory=True)
    line = refused(capsys, *prepare_numpy(raw, link, "--overwrite"))
    assert f"refusing to replace {raw}: it contains the input {raw / 'ecgs.npy'}" in line  # named as resolved
    assert (raw / SENTINEL).exists() and link.is_symlink()


def test_overwrite_refuses_an_incomplete_store(raw, tmp_path, capsys):
    store = tmp_path / "store"
    run_json(capsys, *prepare_numpy(raw, store))
    (store / MANIFEST).unlink()  # as an interrupted copy of a store leaves it
    keep = sentinel_in(store)
    before = tree(store)
    line = refused(capsys, *prepare_numpy(raw, store, "--overwrite"))
    assert f"refusing to replace {store}: it is an incomplete ecg_ray store (no manifest.json" in line
    assert tree(store) == before and keep.exists()


def test_overwrite_refuses_a_store_with_a_foreign_manifest(raw, tmp_path, capsys):
    other = tmp_path / "other-tool-output"
    sentinel_in(other)
    (other / MANIFEST).write_text(json.dumps({"format": "some.other.tool", "files": 3}))
    line = refused(capsys, *prepare_numpy(raw, other, "--overwrite"))
    assert f"refusing to replace {other}: its manifest.json is not an ecg_ray store manifest" in line
    (other / MANIFEST).write_text("{ truncated")
    line = refused(capsys, *prepare_numpy(raw, other, "--overwrite"))
    assert "its manifest.json is unreadable" in line
    assert (other / SENTINEL).exists()


def test_overwrite_refuses_a_complete_store_that_holds_an_input(raw, tmp_path, capsys):
    store = tmp_path / "store"
    run_json(capsys, *prepare_numpy(raw, store))
    labels = store / "my-labels.csv"  # the user keeps the labels next to the store's files
    labels.write_text("record,label\n0,A\n1,B\n2,A\n3,B\n")
    before = tree(store)
    line = refused(capsys, *prepare_numpy(raw, store, "--overwrite", "--labels", labels))
    assert f"refusing to replace {store}: it contains the input {labels}" in line
    assert tree(store) == before and labels.exists()
    assert EcgStore(store).verify() == [f"{labels.name}: unexpected file (not in manifest)"]  # the store is intact


def test_guard_runs_before_any_input_is_read(tmp_path, capsys):
    """A refused --out is reported even when reading the input would fail: nothing was read."""
    plain = tmp_path / "plain.txt"
    plain.write_text("keep")
    line = refused(capsys, "prepare", "numpy", tmp_path / "missing.npy", "--fs", "100", "--out", plain, "--overwrite")
    assert "refusing to replace" in line and "missing.npy" not in line

    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.base import Source

    class Unreadable(Source):
        kind = "unreadable"

        def refs(self):
            raise AssertionError("refs() was called before the target was checked")

        def read(self, ref):
            raise AssertionError("read() was called before the target was checked")

    with pytest.raises(StoreError, match="it is a file, not an ecg_ray store"):
        prepare_store([Unreadable()], plain, overwrite=True, workers=1, progress=False)
    assert plain.read_text() == "keep"


def test_overwrite_replaces_a_complete_store(raw, tmp_path, capsys):
    store = tmp_path / "store"
    first = run_json(capsys, "prepare", "synthetic", "--records", 12, "--out", store, "--no-progress")
    second = run_json(capsys, "prepare", "synthetic", "--records", 30, "--out", store, "--no-progress", "--overwrite")
    assert (first["records"], second["records"]) == (12, 30)
    assert EcgStore(store).verify() == []  # nothing of the staging (its owner file) went into the store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "store"]  # no .partial/.old left behind
    # an empty directory holds nothing to lose: --overwrite fills it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_json(capsys, *prepare_numpy(raw, empty, "--overwrite"))["records"] == 4


def test_target_is_checked_again_right_before_it_is_replaced(tmp_path):
    """A store that became a user's directory while the new one was being written is kept."""
    from ecg_ray.data.sources.base import Record

    store = tmp_path / "store"
    writer = StoreWriter(store, fs=100.0)
    writer.add(Record(id="0", dataset="d", file="f", signal=np.zeros((500, 12), np.float32), fs=100.0,
                      fs_original=100.0, labels=["A"], metadata={"fold": 1}))
    writer.finalize(sources=[], label_names=None)
    assert EcgStore(store).verify() == []
    writer = StoreWriter(store, fs=100.0, overwrite=True)  # allowed now: the target is a complete store
    writer.add(Record(id="1", dataset="d", file="f", signal=np.ones((500, 12), np.float32), fs=100.0,
                      fs_original=100.0, labels=["A"], metadata={"fold": 1}))
    shutil.rmtree(store)  # meanwhile, the user puts their own files there
    keep = sentinel_in(store)
    with pytest.raises(StoreError, match=f"refusing to replace {store}: it is a directory that is not"):
        writer.finalize(sources=[], label_names=None)
    assert keep.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # partial removed


def test_ptbxl_prepared_onto_its_own_directory_is_refused(ptbxl_dir, tmp_path, capsys):
    """The issue's own example: ``prepare ptbxl raw --out raw --overwrite`` (and the parent, and a store inside)."""
    raw = tmp_path / "ptbxl"
    (raw / "records100" / "00000").mkdir(parents=True)
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(ptbxl_dir / name, raw / name)
    for record in sorted((ptbxl_dir / "records100" / "00000").glob("0000[1-5]_lr.*")):
        shutil.copy(record, raw / "records100" / "00000" / record.name)
    sentinel_in(raw)
    before = tree(raw)
    args = ["prepare", "ptbxl", raw, "--no-progress", "--overwrite", "--out"]
    assert f"refusing to replace {raw}: it is the input {raw};" in refused(capsys, *args, raw)
    assert f"refusing to replace {tmp_path}: it contains the input {raw}" in refused(capsys, *args, tmp_path)
    # the PTB-XL database given as --ptbxl-db is an input too
    db_dir = tmp_path / "meta"
    db_dir.mkdir()
    shutil.copy(raw / "ptbxl_database.csv", db_dir / "ptbxl_database.csv")
    line = refused(capsys, *args, db_dir, "--ptbxl-db", db_dir / "ptbxl_database.csv", "--exclude-ptbxl-folds", "10")
    assert f"it contains the input {db_dir / 'ptbxl_database.csv'}" in line
    # a store created inside the input directory is fine; replacing it is not (it lies inside the input)
    inside = raw / "store"
    assert run_json(capsys, "prepare", "ptbxl", raw, "--no-progress", "--out", inside)["records"] >= 1
    before_inside = tree(raw)
    assert f"refusing to replace {inside}: it lies inside the input {raw}" in refused(capsys, *args, inside)
    assert tree(raw) == before_inside and set(before) <= set(before_inside)


# ---------------------------------------------------------------------------------------------
# export, sweep, run and demo outputs
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fake_run(tmp_path) -> Path:
    """A run directory with one checkpoint (no training needed to export it)."""
    from ecg_ray.train.checkpoint import save_checkpoint

    run = tmp_path / "run"
    checkpoint = run / "checkpoint_000000"
    checkpoint.mkdir(parents=True)
    save_checkpoint(checkpoint, {"model": {"encoder.w": torch.arange(3.0)}, "epoch": 0,
                                 "config": {"model": {"encoder": "xresnet1d50"}, "method": {"name": "simclr"},
                                            "data": {"crop": 250}}}, [])
    return run


def test_export_refuses_to_replace_a_file_that_is_not_an_encoder_export(fake_run, tmp_path, capsys):
    notes = tmp_path / "notes.pt"
    notes.write_text("not a torch file")
    line = refused(capsys, "export", fake_run, "--out", notes)
    assert f"refusing to replace {notes}: the existing file is not an ecg_ray encoder export" in line
    assert notes.read_text() == "not a torch file"
    # a torch file of another kind (here the run's own checkpoint state) is refused as well
    state = fake_run / "checkpoint_000000" / "state.pt"
    before = state.read_bytes()
    assert "is not an ecg_ray encoder export" in refused(capsys, "export", fake_run, "--out", state)
    assert state.read_bytes() == before
    # and a directory is never replaced
    folder = tmp_path / "exports"
    keep = sentinel_in(folder)
    assert f"refusing to replace {folder}: it is a directory" in refused(capsys, "export", fake_run, "--out", folder)
    assert keep.exists()


def test_export_replaces_an_earlier_export(fake_run, tmp_path, capsys):
    out = tmp_path / "encoder.pt"
    assert main(["export", str(fake_run), "--out", str(out)]) == 0
    first = torch.load(out, weights_only=True)
    assert first["format"] == "ecg_ray.encoder.v1"
    from ecg_ray.train.checkpoint import load_state, save_checkpoint

    checkpoint = fake_run / "checkpoint_000000"
    state = load_state(checkpoint)
    state["model"] = {"encoder.w": torch.full((3,), 7.0)}
    state["epoch"] = 1
    save_checkpoint(checkpoint, state, [{}, {}])
    assert main(["export", str(fake_run), "--out", str(out)]) == 0
    second = torch.load(out, weights_only=True)
    assert second["epoch"] == 1 and torch.equal(second["state_dict"]["w"], torch.full((3,), 7.0))


def test_sweep_refuses_a_directory_that_is_not_a_sweep(tmp_path, capsys):
    store = tmp_path / "store"
    run_json(capsys, "prepare", "synthetic", "--records", 200, "--out", store, "--no-progress")
    sweep_file = tmp_path / "mini.yaml"
    sweep_file.write_text(f"name: mini\nkind: evaluate\nbase: {ROOT / 'jobs' / 'smoke' / 'eval-linear.yaml'}\n"
                          "search: {data.label_fraction: {grid: [1.0]}}\n")
    folder = tmp_path / "results"
    keep = sentinel_in(folder)
    line = refused(capsys, "sweep", "--config", sweep_file, "--store", store, "--output", folder)
    assert f"refusing to write a sweep into {folder}: it is a non-empty directory without sweep.yaml" in line
    assert tree(folder) == [SENTINEL] and keep.exists()


def test_sweep_directory_rules(tmp_path):
    import yaml

    assert check_sweep_dir(tmp_path / "new") == str(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    assert check_sweep_dir(tmp_path / "empty") == str(tmp_path / "empty")
    sweep = tmp_path / "sweep"  # what run_sweep writes first: resuming it is allowed
    sweep.mkdir()
    spec = {"name": "mini", "kind": "evaluate", "base": str(ROOT / "jobs" / "smoke" / "eval-linear.yaml"),
            "set": {}, "variants": [], "search": {"data.label_fraction": {"grid": [1.0]}}}  # as load_sweep returns it
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (sweep / "results.csv").write_text("trial_id\n")
    assert check_sweep_dir(sweep) == str(sweep)
    (sweep / "sweep.yaml").write_text("- just\n- a list\n")
    with pytest.raises(EcgRayError, match="its sweep.yaml is not an ecg_ray sweep file"):
        check_sweep_dir(sweep)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EcgRayError, match="it is a file"):
        check_sweep_dir(tmp_path / "file")


def test_run_output_that_is_a_file_is_refused_before_ray_starts(tmp_path, capsys):
    store = tmp_path / "store"
    run_json(capsys, "prepare", "synthetic", "--records", 200, "--out", store, "--no-progress")
    plain = tmp_path / "runs"
    plain.write_text("not a directory")
    for verb, config in (("pretrain", "simclr.yaml"), ("evaluate", "eval-linear.yaml")):
        line = refused(capsys, verb, "--config", ROOT / "jobs" / "smoke" / config, "--store", store,
                       "--workers", 1, "--epochs", 1, "--output", plain)
        assert f"--output {plain} is a file; give a directory" in line
    assert plain.read_text() == "not a directory"
    with pytest.raises(EcgRayError, match=f"{plain} is a file, not a directory"):
        check_output_dir(plain / "sub")


def test_demo_cleans_only_its_own_directory(tmp_path, capsys):
    from ecg_ray import demo

    home = tmp_path / "home"  # e.g. `python -m ecg_ray.demo --out ~`: the user's runs must survive
    (home / "runs" / "my-experiment").mkdir(parents=True)
    keep = sentinel_in(home / "runs" / "my-experiment")
    assert demo.main(["--out", str(home)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"refusing to use {home} for the demo" in err[0]
    assert keep.exists()
    # a demo directory of an older version (no mark) is recognised by its layout; a run folder of
    # someone else's files inside it still stops the demo
    legacy = tmp_path / "demo_out"
    (legacy / "synthetic.zarr").mkdir(parents=True)
    (legacy / "runs" / "simclr-20260101-000000").mkdir(parents=True)
    (legacy / "runs" / "simclr-20260101-000000" / "ecg_ray_config.yaml").write_text("method: {}\n")
    (legacy / "report").mkdir()
    (legacy / "report" / "report.md").write_text("# report\n")
    demo.claim_output_dir(legacy)
    assert (legacy / demo.DEMO_MARK).exists()
    stray = sentinel_in(legacy / "evaluations" / "not-a-run")
    with pytest.raises(EcgRayError, match="not an ecg_ray run directory"):
        demo.claim_output_dir(legacy)
    assert stray.exists()


# ---------------------------------------------------------------------------------------------
# cloud targets
# ---------------------------------------------------------------------------------------------

def test_uri_relations():
    assert relation("s3://b/stores/x", "s3://b/stores/x") == "is"
    assert relation("s3://b/stores", "s3://b/stores/x/labels.csv") == "contains"
    assert relation("s3://b/stores/x/y", "s3://b/stores/x") == "lies inside"
    assert relation("s3://b/stores/x", "s3://b/stores/xy") is None  # a prefix of the name is not a parent
    assert relation("s3://b/stores/x", "/stores/x") is None


def test_cloud_overwrite_refuses_what_is_not_a_store(s3_bucket, tmp_path, capsys):
    user_prefix = f"{s3_bucket}/data/ecgs"
    storage.write_text("keep me", f"{user_prefix}/{SENTINEL}")
    args = ["prepare", "synthetic", "--records", "12", "--no-progress", "--overwrite", "--out"]
    line = refused(capsys, *args, user_prefix)
    assert f"refusing to replace {user_prefix}: it is a directory that is not an ecg_ray store" in line
    plain = f"{s3_bucket}/data/table.csv"
    storage.write_text("a,b\n", plain)
    assert f"refusing to replace {plain}: it is a file, not an ecg_ray store" in refused(capsys, *args, plain)
    store = f"{s3_bucket}/stores/synthetic"
    run_json(capsys, "prepare", "synthetic", "--records", "12", "--no-progress", "--out", store)
    storage.delete_file(f"{store}/{MANIFEST}")  # an interrupted upload
    assert "it is an incomplete ecg_ray store" in refused(capsys, *args, store)
    assert storage.read_text(f"{user_prefix}/{SENTINEL}") == "keep me"
    assert storage.read_text(plain) == "a,b\n"
    assert storage.exists(f"{store}/zarr.json")
    # a complete cloud store is replaced
    fresh = f"{s3_bucket}/stores/fresh"
    run_json(capsys, "prepare", "synthetic", "--records", "12", "--no-progress", "--out", fresh)
    assert run_json(capsys, *args[:3], "20", *args[4:], fresh)["records"] == 20
    assert EcgStore(fresh).verify() == []
    # the local staging directory of the upload is gone too
    assert not [p for p in Path(tempfile.gettempdir()).glob("ecg_ray-store-staging-*")
                if fresh in (p / OWNER_FILE).read_text(errors="replace")]
