"""Sweep files: validation before Ray starts, search spaces, searchers and schedulers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ecg_ray.errors import ConfigError
from ecg_ray.tune import _scheduler, _searcher, load_sweep, param_space, trial_overrides

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def _write(tmp_path, spec: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    spec = {"base": str(JOBS / "smoke" / "eval-linear.yaml"), **spec}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in (JOBS / "sweeps").glob("*.yaml")))
def test_shipped_sweeps_validate(name):
    spec = load_sweep(JOBS / "sweeps" / f"{name}.yaml")
    assert spec["search"] or spec["variants"]


def test_spaces_searchers_and_asha(tmp_path):
    spec = load_sweep(_write(tmp_path, {
        "search": {"optim.lr": {"loguniform": [1e-4, 1e-2]}, "data.label_fraction": {"choice": [0.1, 1.0]},
                   "train.epochs": {"randint": [1, 3]}},
        "searcher": "optuna", "scheduler": {"name": "asha", "grace_period": 1, "max_t": 3}}))
    space = param_space(spec)
    assert set(space) == {"optim.lr", "data.label_fraction", "train.epochs"}
    assert 1e-4 <= space["optim.lr"].sample() <= 1e-2
    assert type(_searcher(spec)).__name__ == "OptunaSearch"
    assert type(_scheduler(spec)).__name__ == "AsyncHyperBandScheduler"


def test_variant_and_search_precedence(tmp_path):
    spec = load_sweep(_write(tmp_path, {
        "set": {"optim.lr": 0.1},
        "variants": [{"variant": "a", "optim.lr": 0.2}, {"variant": "b"}],
        "search": {"data.label_fraction": {"grid": [0.5]}}}), overrides=["train.epochs=1"])
    overrides, variant = trial_overrides(spec, {"__variant": 0, "data.label_fraction": 0.5})
    assert variant == "a" and overrides["optim.lr"] == 0.2 and overrides["train.epochs"] == 1
    overrides, variant = trial_overrides(spec, {"__variant": 1, "data.label_fraction": 0.5})
    assert variant == "b" and overrides["optim.lr"] == 0.1


@pytest.mark.parametrize("spec,message", [
    ({"serch": {}}, "unknown sweep key"),
    ({"search": {"optim.lr": {"logarithmic": [1, 2]}}}, "search.optim.lr"),
    ({"search": {"optim.lrr": {"grid": [0.1]}}}, "optim.lrr"),
    ({"searcher": "optuna", "search": {"optim.lr": {"grid": [0.1]}}}, "optuna"),
    ({"kind": "train"}, "kind"),
    ({"scheduler": {"name": "pbt"}}, None),
])
def test_bad_sweeps_fail_before_ray(spec, message, tmp_path):
    if message is None:  # scheduler names are checked when the sweep is built
        with pytest.raises(ConfigError, match="scheduler"):
            _scheduler(load_sweep(_write(tmp_path, spec)))
        return
    with pytest.raises(ConfigError, match=message):
        load_sweep(_write(tmp_path, spec))
