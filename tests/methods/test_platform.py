"""The method platform: a method from a test file alone registers, configures and pretrains.

No file of the package names ``toy``: its config section, range rules, display name and batch
fields come from ``tests/methods/toy_method.py`` through the registry.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecg_ray.config import Config, from_dict, load_config, to_dict
from ecg_ray.errors import ConfigError
from ecg_ray.methods import build_method, methods
from ecg_ray.methods.base import Method, synthetic_batch
from ecg_ray.methods.registry import MethodChoices, register
from tests.cli import run_json

ROOT = Path(__file__).resolve().parents[2]
TOY = ["method.name=toy", "method.module=tests.methods.toy_method"]


def test_the_package_imports_no_method_and_no_torch_until_asked():
    code = ("import sys; import ecg_ray.cli, ecg_ray.methods, ecg_ray.config; "
            "print('torch' in sys.modules, [m for m in sys.modules if m.startswith('ecg_ray.methods.')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False ['ecg_ray.methods.registry']"


def test_the_registry_lists_the_package_methods_with_their_declarations():
    registered = methods()
    assert {"simclr", "byol", "swav", "cpc"} <= set(registered)
    assert registered["cpc"].encoder_output == "sequence" and registered["simclr"].encoder_output == "pooled"
    assert registered["byol"].display_name == "BYOL"
    assert "swav" in MethodChoices() and "nope" not in MethodChoices()


def test_a_method_from_a_test_module_is_configured_through_the_registry():
    config = load_config(overrides=[*TOY, "toy.temperature=0.2"])
    assert config.toy.temperature == 0.2 and config.toy.projection_dim == 8
    assert "toy" in methods() and methods()["toy"].display_name == "Toy contrastive"
    saved = to_dict(config)
    assert saved["toy"] == {"projection_dim": 8, "temperature": 0.2}
    keys = list(saved)
    package = [n for n, cls in methods().items() if cls.__module__.startswith("ecg_ray.methods.")]
    assert keys[keys.index("method") + 1:keys.index("optim")] == package + ["toy"]  # sections follow method:
    # A config of another method, saved in this process, leaves toy out: its workers never import toy.
    assert "toy" not in to_dict(load_config(overrides=["method.name=simclr"]))
    # The saved config, through YAML, builds the same config again (a resumed run, a worker's loop config).
    assert from_dict(Config, yaml.safe_load(yaml.safe_dump(saved))) == config


@pytest.mark.parametrize(("override", "message"), [
    ("toy.temperature=0", "toy.temperature must be > 0, got 0.0"),
    ("toy.width=3", "unknown config key(s) toy.width"),
    ("simclr.temperature=0.1", "config sets simclr.* but method.name is 'toy'"),
])
def test_its_settings_are_checked_like_the_packages(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[*TOY, override])
    assert message in str(error.value)


def test_unknown_method_and_module_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"method.name: unknown method 'nope'; choose one of .*simclr"):
        load_config(overrides=["method.name=nope"])
    with pytest.raises(ConfigError, match=r"method.module: cannot import 'no_such_module_x'"):
        load_config(overrides=["method.name=x", "method.module=no_such_module_x"])


def test_a_bad_declaration_fails_when_the_class_is_defined():
    with pytest.raises(TypeError, match="batch_fields: unknown field"):
        type("Broken", (Method,), {"name": "broken_fields", "batch_fields": ("heart_rate",)})
    with pytest.raises(TypeError, match="lower-case identifier"):
        type("Broken", (Method,), {"name": "Bad Name"})
    with pytest.raises(TypeError, match="defined twice"):
        register(type("Other", (), {"name": "simclr", "__module__": "elsewhere", "__qualname__": "Other",
                                    "config_class": None, "batch_fields": (), "encoder_output": "pooled"}))


def test_the_batch_fields_reach_the_step():
    import torch

    config = load_config(overrides=[*TOY, "train.batch_size=8"])
    method = build_method(config, fs=100.0)
    method.set_generator(torch.Generator().manual_seed(0))
    batch = synthetic_batch(0.3 * torch.randn(8, 12, 250), method.batch_fields)
    out = method(batch)
    assert torch.isfinite(out["loss"]) and torch.equal(method.last_records, torch.arange(8))


@pytest.mark.slow
def test_the_toy_method_pretrains_one_epoch_on_ray(ray_session, ptbxl_store, tmp_path, capsys):
    job = tmp_path / "toy.yaml"
    job.write_text(yaml.safe_dump({
        "method": {"name": "toy", "module": "tests.methods.toy_method"}, "toy": {"temperature": 0.5},
        "data": {"crop": 250, "train_folds": [1, 2, 3, 4, 5, 6, 7, 8], "val_folds": [9]},
        "optim": {"lr": 0.003, "warmup_epochs": 0}, "train": {"epochs": 2, "batch_size": 32, "workers": 2,
                                                              "probe_max_records": 40}}))
    summary = run_json(capsys, "pretrain", "--config", job, "--store", ptbxl_store, "--output", tmp_path / "runs")
    assert summary["method"] == "toy" and summary["epochs"] == 2
    assert all(loss == loss for loss in summary["loss"])  # finite: a NaN would have stopped the run
    assert summary["loss"][-1] < summary["loss"][0], summary["loss"]
