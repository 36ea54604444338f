"""Errors before Ray starts, in one line: numbers in YAML, value ranges, fold selections, bad paths (issue #16)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ecg_ray.cli import build_parser, pretrain_config
from ecg_ray.config import Config, load_config, load_yaml, to_dict
from ecg_ray.errors import ConfigError
from tests.refusals import refuse, synthetic_store

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("driver_checks"))


# --- numbers in every notation -------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("1e-3", 1e-3), ("3E5", 3e5), ("-.5", -0.5), ("+1e2", 100.0), ("1.5e-3", 1.5e-3), ("3.0e-4", 3e-4),
    (".5", 0.5), ("1_000", 1000), ("7", 7), (".inf", float("inf")),
])
def test_yaml_numbers_parse_as_yaml_1_2(text, value):
    parsed = load_yaml(f"x: {text}")["x"]
    assert parsed == value and type(parsed) is type(value)
    assert yaml.safe_load("x: 1e-3")["x"] == "1e-3"  # the YAML 1.1 reading this replaces


@pytest.mark.parametrize("text", ['"1e-3"', "1e", "e5", "1e-3x", "v1.2"])
def test_yaml_strings_stay_strings(text):
    assert isinstance(load_yaml(f"x: {text}")["x"], str)


def test_config_file_numbers_reach_every_field_type(tmp_path):
    path = tmp_path / "run.yaml"
    # augmentations are list[dict]: their values are passed on as parsed, with no per-field coercion
    path.write_text("optim: {lr: 3e-4, betas: [9e-1, 0.999], weight_decay: 1E-6}\n"
                    "eval: {finetune_lr: 1e-4}\nnoise: {snr_db: [1e1, -6]}\ntrain: {epochs: 1e2}\n"
                    "augmentations: [{name: GaussianNoise, sigma: 1e-2}]\n")
    config = load_config(path)
    assert (config.optim.lr, config.optim.betas, config.optim.weight_decay) == (3e-4, [0.9, 0.999], 1e-6)
    assert config.eval.finetune_lr == 1e-4 and config.noise.snr_db == [10.0, -6.0]
    assert config.train.epochs == 100 and isinstance(config.train.epochs, int)
    assert config.augmentations == [{"name": "GaussianNoise", "sigma": 0.01}]


def test_set_numbers_through_the_cli(tmp_path):
    args = build_parser().parse_args(["pretrain", "--store", str(tmp_path), "--set", "optim.lr=1e-3",
                                      "--set", "augmentations=[{name: GaussianNoise, sigma: 5e-3}]",
                                      "--set", "train.max_steps_per_epoch=1e3"])
    config = pretrain_config(args)
    assert config.optim.lr == 1e-3
    assert config.augmentations[0]["sigma"] == 5e-3
    assert config.train.max_steps_per_epoch == 1000


def test_saved_run_config_reloads_numbers(tmp_path):
    from ecg_ray.train.trainer import RUN_CONFIG, resume_config

    tree = to_dict(Config())
    text = yaml.safe_dump(tree).replace("lr: 0.001", "lr: 1e-3")  # as a user edits it by hand
    text += "augmentations: [{name: GaussianNoise, sigma: 1e-2}]\n"
    (tmp_path / RUN_CONFIG).write_text(text.replace("augmentations: null\n", ""))
    config = resume_config(tmp_path, ["optim.weight_decay=1e-5"], None)
    assert config.optim.lr == 1e-3 and config.optim.weight_decay == 1e-5
    assert config.augmentations == [{"name": "GaussianNoise", "sigma": 0.01}]


def test_integer_settings_refuse_fractions():
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer, got 2.5"):
        load_config(overrides=["train.epochs=2.5"])


# --- value ranges, before Ray starts --------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("optim.lr=-1", "optim.lr must be > 0, got -1.0"),
    ("optim.lr=.nan", "optim.lr must be a finite number, got nan"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay must be >= 0, got -0.0001"),
    ("optim.betas=[0.9, 1.5]", "optim.betas must be two numbers in [0, 1)"),
    ("data.label_fraction=2", "data.label_fraction must be in (0, 1], got 2.0"),
    ("data.label_fraction=0", "data.label_fraction must be in (0, 1], got 0.0"),
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("data.crop=0", "data.crop must be >= 1 (samples), got 0"),
    ("simclr.temperature=0", "simclr.temperature must be > 0, got 0.0"),
    ("optim.schedule=linear", "optim.schedule must be cosine or constant, got 'linear'"),
    ("optim.name=rmsprop", "optim.name: unknown optimizer 'rmsprop'"),
    ("augmentations=[{name: Mixup}]", "augmentations[0]: unknown transform 'Mixup'"),
    ("augmentations=[{name: TimeOut, length: 3}]", "TimeOut: unknown parameter 'length' (allowed: p, fraction)"),
    ("augmentations=[{name: TimeOut, fraction: wide}]", "TimeOut: 'fraction' must be a pair"),
    # needs the store's rate (100 Hz): built in the driver as the workers build it
    ("augmentations=[{name: EMNoise, band: [60, 70]}]", "EMNoise: 'band' must start below Nyquist (50 Hz)"),
])
def test_pretrain_values_refused_before_ray(override, message, store, tmp_path, capsys):
    line = refuse(capsys, "pretrain", "--store", store, "--output", tmp_path / "runs", "--set", override)
    assert message in line
    assert not (tmp_path / "runs").exists()


def test_epochs_flag_and_evaluate_values_refused(store, tmp_path, capsys):
    line = refuse(capsys, "pretrain", "--store", store, "--output", tmp_path, "--epochs", "0")
    assert "train.epochs must be >= 1, got 0" in line
    line = refuse(capsys, "evaluate", "--store", store, "--config", JOBS / "smoke" / "eval-linear.yaml",
                  "--output", tmp_path, "--set", "data.label_fraction=1.5")
    assert "data.label_fraction must be in (0, 1], got 1.5" in line
    assert not any(tmp_path.iterdir())


def test_resume_overrides_get_the_same_checks(tmp_path, capsys):
    from ecg_ray.train.trainer import RUN_CONFIG

    (tmp_path / RUN_CONFIG).write_text(yaml.safe_dump(to_dict(Config())))
    line = refuse(capsys, "pretrain", "--resume", tmp_path, "--set", "optim.lr=-1")
    assert "optim.lr must be > 0, got -1.0" in line


def test_cpc_negative_modes_are_the_losss(capsys):
    # The rule lives in the method's file and takes the modes from the loss: one list.
    line = refuse(capsys, "pretrain", "--config", "jobs/smoke/cpc.yaml", "--set", "cpc.negatives=all")
    assert "cpc.negatives must be one of batch, sequence, both, got 'all'" in line


# --- fold selections without records --------------------------------------------------------------

@pytest.mark.parametrize("key", ["data.train_folds", "data.val_folds"])
def test_pretrain_folds_without_records(key, store, tmp_path, capsys):
    line = refuse(capsys, "pretrain", "--store", store, "--output", tmp_path, "--set", f"{key}=[11]")
    assert line == f"ecg-ray pretrain: error: {key}: no records in folds [11] of {store} (folds present: 1..10)"


def test_mixed_store_folds_without_records(store, tmp_path, capsys):
    stores = f"[{{path: {store}}}, {{path: {store}, folds: [0, 12]}}]"
    line = refuse(capsys, "pretrain", "--output", tmp_path, "--set", f"data.stores={stores}")
    assert "data.stores[1].folds: no records in folds [0, 12] of" in line and "(folds present: 1..10)" in line


@pytest.mark.parametrize("key", ["train_folds", "val_folds", "test_folds"])
def test_evaluate_folds_without_records(key, store, tmp_path, capsys):
    line = refuse(capsys, "evaluate", "--store", store, "--config", JOBS / "smoke" / "eval-linear.yaml",
                  "--output", tmp_path, "--set", f"data.{key}=[11]")
    assert line.endswith(f"data.{key}: no records in folds [11] of {store} (folds present: 1..10)")


def test_fold_ranges():
    from ecg_ray.train.preflight import fold_ranges

    assert fold_ranges([8, 1, 2, 3, 5, 7]) == "1..3, 5, 7..8"
    assert fold_ranges([4]) == "4" and fold_ranges([]) == ""


# --- paths of the wrong kind ----------------------------------------------------------------------

def test_config_that_is_a_directory_or_binary(store, tmp_path, capsys):
    line = refuse(capsys, "pretrain", "--store", store, "--output", tmp_path, "--config", tmp_path)
    assert line == f"ecg-ray pretrain: error: config file {tmp_path} is a directory, not a YAML file"
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)))
    line = refuse(capsys, "evaluate", "--store", store, "--output", tmp_path, "--config", binary)
    assert line == f"ecg-ray evaluate: error: config file {binary} is not a YAML text file (binary content)"
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 0.1\ntrain: {}\n")
    line = refuse(capsys, "pretrain", "--store", store, "--output", tmp_path, "--config", bad)
    assert f"config file {bad}: invalid YAML at line" in line


def test_store_that_is_a_file(tmp_path, capsys):
    plain = tmp_path / "store.zarr"
    plain.write_text("not a store")
    line = refuse(capsys, "pretrain", "--store", plain, "--output", tmp_path / "runs")
    assert line == f"ecg-ray pretrain: error: {plain}: is a file, not a store directory"
    line = refuse(capsys, "evaluate", "--store", plain, "--config", JOBS / "smoke" / "eval-linear.yaml",
                  "--output", tmp_path / "runs")
    assert line.endswith(f"{plain}: is a file, not a store directory")
