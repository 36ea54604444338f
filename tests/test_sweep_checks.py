"""Sweep files: malformed spaces, unknown modes and metrics the trials never report fail before Ray (#16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecg_ray.config import load_config
from ecg_ray.sweep_checks import TUNE_METRICS, reported_metrics
from ecg_ray.tune import load_sweep, param_space
from tests.refusals import refuse, synthetic_store

JOBS = Path(__file__).resolve().parents[1] / "jobs"
EVAL_LINEAR = JOBS / "smoke" / "eval-linear.yaml"
SIMCLR = JOBS / "smoke" / "simclr.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("sweep_checks"))


def _sweep(tmp_path: Path, text: str, base: Path = EVAL_LINEAR) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: {base}\n{text}")
    return path


def test_numbers_in_sweep_files_and_set(tmp_path):
    path = _sweep(tmp_path, "search:\n  optim.lr: {loguniform: [1e-4, 1e-2]}\n"
                            "  optim.weight_decay: {grid: [1e-3, 3e-4]}\n  train.epochs: {randint: [1, 3e0]}\n"
                            "set: {eval.finetune_lr: 5e-4}\n")
    spec = load_sweep(path, overrides=["optim.min_lr_ratio=1e-2"])
    assert spec["search"]["optim.lr"] == {"loguniform": [1e-4, 1e-2]}
    assert spec["search"]["optim.weight_decay"] == {"grid": [1e-3, 3e-4]}
    assert spec["search"]["train.epochs"] == {"randint": [1, 3]}
    assert spec["set"]["eval.finetune_lr"] == 5e-4 and spec["set"]["optim.min_lr_ratio"] == 1e-2
    space = param_space(spec)
    assert all(1e-4 <= space["optim.lr"].sample() <= 1e-2 for _ in range(20))


@pytest.mark.parametrize("search,message", [
    ("optim.lr: {loguniform: [0.1]}", "search.optim.lr: loguniform needs [low, high] (2 finite numbers), got [0.1]"),
    ("optim.lr: {loguniform: [0, 0.1]}", "search.optim.lr: loguniform needs 0 < low"),
    ("optim.lr: {uniform: [0.2, 0.1]}", "search.optim.lr: uniform needs low < high, got [0.2, 0.1]"),
    ("optim.lr: {uniform: [a, b]}", "search.optim.lr: uniform needs [low, high] (2 finite numbers)"),
    ("train.epochs: {randint: [1.5, 3]}", "search.train.epochs: randint needs integer bounds"),
    ("optim.lr: {quniform: [0.1, 0.5, 0]}", "search.optim.lr: quniform needs a step q > 0"),
    ("optim.lr: {quniform: [0.1, 0.5]}", "search.optim.lr: quniform needs [low, high, q] (3 finite numbers)"),
    ("optim.lr: {grid: []}", "search.optim.lr: grid needs a non-empty list of values, got []"),
    ("optim.lr: {choice: 0.1}", "search.optim.lr: choice needs a non-empty list of values, got 0.1"),
    ("optim.lr: {logrand: [1, 2]}", "search.optim.lr: unknown space 'logrand'; use one of grid, choice"),
    ("optim.lr: {grid: [0.1], choice: [0.2]}", "search.optim.lr must be one mapping {KIND: VALUES}"),
    # every value is tried as a trial config, not only the first
    ("data.label_fraction: {grid: [0.5, 2]}", "search.data.label_fraction value 2: data.label_fraction must be in (0, 1]"),
    ("optim.lr: {choice: [0.1, -1]}", "search.optim.lr value -1: optim.lr must be > 0"),
    ("train.epochs: {uniform: [1, 3]}", "train.epochs: expected an integer"),
])
def test_malformed_spaces(search, message, tmp_path, capsys):
    path = _sweep(tmp_path, f"search:\n  {search}\n")
    line = refuse(capsys, "sweep", "--config", path, "--output", tmp_path / "out")
    assert line.startswith(f"ecg-ray sweep: error: {path}: ") and message in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text,message", [
    ("mode: maximize\n", "mode must be min or max, got 'maximize'"),
    ("metric: accuracy\n", "metric 'accuracy' is never reported by evaluate trials; choose one of epoch, loss, lr, "
                           "samples_per_s, time_this_iter_s, time_total_s, training_iteration, val_macro_auc"),
    ("metric: test_macro_auc\n", "metric 'test_macro_auc' is not reported by these evaluate trials: it is reported "
                                 "only after a trial's last epoch"),
    ("num_samples: 0\n", "num_samples must be an integer >= 1, got 0"),
    ("searcher: bayes\n", "searcher must be one of grid, random, optuna, got 'bayes'"),
    ("scheduler: {name: asha, grace: 2}\n", "scheduler {'name': 'asha', 'grace': 2}: "),
    ("scheduler: {name: asha, grace_period: 5, max_t: 2}\n", "scheduler {'name': 'asha', 'grace_period': 5"),
    ("variants: [linear]\n", "variants must be a list of mappings"),
])
def test_bad_sweep_settings(text, message, tmp_path, capsys):
    path = _sweep(tmp_path, text)
    line = refuse(capsys, "sweep", "--config", path, "--output", tmp_path / "out")
    assert line.startswith(f"ecg-ray sweep: error: {path}: ") and message in line


def test_sweep_file_that_is_a_directory_or_not_a_mapping(tmp_path, capsys):
    line = refuse(capsys, "sweep", "--config", tmp_path)
    assert line == f"ecg-ray sweep: error: sweep file {tmp_path} is a directory, not a YAML file"
    listed = tmp_path / "list.yaml"
    listed.write_text("- base: x.yaml\n")
    assert refuse(capsys, "sweep", "--config", listed).endswith(f"sweep file {listed}: top level must be a mapping")


def test_final_metric_accepted_for_one_epoch_trials(tmp_path):
    spec = load_sweep(_sweep(tmp_path, "metric: test_macro_auc\nset: {train.epochs: 1}\n"))
    assert spec["metric"] == "test_macro_auc"


def test_pretrain_metrics_follow_the_config(tmp_path, capsys):
    path = _sweep(tmp_path, "kind: pretrain\nmetric: val_macro_auc\nset: {data.val_folds: null}\n", base=SIMCLR)
    assert "pretraining reports validation metrics only with data.val_folds" in refuse(
        capsys, "sweep", "--config", path, "--output", tmp_path / "out")
    path = _sweep(tmp_path, "kind: pretrain\nmetric: loss_uniform_ratio\n",
                  base=JOBS / "smoke" / "byol.yaml")
    assert "BYOL's loss has no uniform-similarity value" in refuse(capsys, "sweep", "--config", path)
    assert load_sweep(_sweep(tmp_path, "kind: pretrain\nmetric: embedding_std\nmode: max\n", base=SIMCLR))


def test_store_checks_before_ray(store, tmp_path, capsys):
    path = _sweep(tmp_path, "set: {data.train_folds: [11]}\n")
    line = refuse(capsys, "sweep", "--config", path, "--store", store, "--output", tmp_path / "out")
    assert line == f"ecg-ray sweep: error: data.train_folds: no records in folds [11] of {store} (folds present: 1..10)"
    line = refuse(capsys, "sweep", "--config", _sweep(tmp_path, ""), "--output", tmp_path / "out")
    assert "data.store: no store given" in line
    # the synthetic store has labels, so a pretraining sweep with the probe on reports val_macro_auc, not val_loss
    path = _sweep(tmp_path, "kind: pretrain\nmetric: val_loss\nset: {train.batch_size: 4}\n", base=SIMCLR)
    line = refuse(capsys, "sweep", "--config", path, "--store", store, "--output", tmp_path / "out")
    assert line == (f"ecg-ray sweep: error: sweep sweep on store {store}: metric 'val_loss' is not reported by these "
                    "pretrain trials: the store has labels, so the online probe reports val_macro_auc instead")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_listed_metrics_are_the_reported_ones(ray_session, store, tmp_path, capsys):
    """The metric lists that sweeps are checked against match what tiny real trials report each epoch."""
    import json

    from tests.cli import run_json

    pretrain = run_json(capsys, "pretrain", "--config", SIMCLR, "--store", store, "--output", tmp_path,
                        "--epochs", 1, "--workers", 1, "--set", "train.batch_size=8",
                        "--set", "train.max_steps_per_epoch=1", "--set", "model.encoder=xresnet1d50")
    from ecg_ray.train.checkpoint import load_history

    (epoch,) = load_history(pretrain["checkpoint"])
    every, _ = reported_metrics("pretrain", load_config(SIMCLR, ["train.batch_size=8"]), labelled=True)
    numeric = {k for k, v in epoch.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    assert numeric == set(every) - set(TUNE_METRICS), (numeric, sorted(every))

    evaluation = run_json(capsys, "evaluate", "--config", EVAL_LINEAR, "--store", store, "--output", tmp_path,
                          "--epochs", 2, "--set", "train.batch_size=8", "--set", "train.max_steps_per_epoch=1",
                          "--set", "eval.bootstrap=0")
    history = json.loads(Path(evaluation["run_dir"], "evaluation.json").read_text())["history"]
    every, _ = reported_metrics("evaluate", load_config(EVAL_LINEAR, ["train.epochs=2"]))
    numeric = {k for k, v in history[0].items() if isinstance(v, int | float) and not isinstance(v, bool)}
    assert numeric == set(every) - set(TUNE_METRICS), (numeric, sorted(every))
