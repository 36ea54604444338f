"""``evaluate --encoder FILE`` / ``--pretrained RUN``: foreign, damaged or mismatched weights fail in the driver (#16)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ecg_ray.config import Config, load_config, to_dict
from ecg_ray.models import build_encoder
from ecg_ray.train.checkpoint import CHECKPOINT_FORMAT, ENCODER_FORMAT, STATE_FILE
from tests.refusals import refuse, synthetic_store

EVAL_LINEAR = Path(__file__).resolve().parents[1] / "jobs" / "smoke" / "eval-linear.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("encoder_file"))


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return build_encoder("xresnet1d50").state_dict()


def _export(path: Path, weights: dict, encoder: str = "xresnet1d50") -> Path:
    torch.save({"format": ENCODER_FORMAT, "encoder": encoder, "state_dict": weights, "method": "simclr"}, path)
    return path


def _evaluate(capsys, store, tmp_path, *source) -> str:
    line = refuse(capsys, "evaluate", "--store", store, "--config", EVAL_LINEAR, "--output", tmp_path / "runs", *source)
    assert not (tmp_path / "runs").exists()
    # torch's advice to load with weights_only=False would run arbitrary code: never pass it on
    assert "weights_only=False" not in line and "weights_only" not in line
    return line


def _write_foreign(kind: str, path: Path) -> None:
    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "npy":
        with path.open("wb") as f:  # a file handle: np.save would add .npy to a path
            np.save(f, np.zeros(3))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": [1, 2]}))
    elif kind == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("kind,reason", [
    ("text", "not a file written by torch.save: a text file"),
    ("npy", "not a file written by torch.save: a NumPy .npy array"),
    ("pickle", "not a file written by torch.save: a Python pickle"),
    ("empty", "the file is empty"),
])
def test_not_a_torch_file(kind, reason, store, tmp_path, capsys):
    path = tmp_path / "encoder.pt"
    _write_foreign(kind, path)
    line = _evaluate(capsys, store, tmp_path, "--encoder", path)
    assert line.startswith(f"ecg-ray evaluate: error: {path} is not an ecg_ray encoder ({reason};")


def test_torch_files_that_are_not_encoders(store, tmp_path, capsys):
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)  # a pickled module: weights-only loading refuses it
    line = _evaluate(capsys, store, tmp_path, "--encoder", module)
    assert f"{module} is not an ecg_ray encoder (a torch file holding Python objects" in line
    assert "torch.nn.modules.linear.Linear" in line
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    assert f"{listed} is not an ecg_ray encoder (a torch file holding a list;" in _evaluate(
        capsys, store, tmp_path, "--encoder", listed)
    checkpoint = tmp_path / "state.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}}, checkpoint)
    assert "it is a training checkpoint; pass its run with --pretrained RUN_DIR" in _evaluate(
        capsys, store, tmp_path, "--encoder", checkpoint)


def test_truncated_encoder_file(weights, store, tmp_path, capsys):
    whole = _export(tmp_path / "whole.pt", weights).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    line = _evaluate(capsys, store, tmp_path, "--encoder", cut)
    assert f"{cut}: cannot load encoder, the file is truncated or corrupt (RuntimeError: " in line


def test_weights_that_do_not_fit(weights, store, tmp_path, capsys):
    other_arch = _export(tmp_path / "arch.pt", weights, encoder="xresnet1d101")
    line = _evaluate(capsys, store, tmp_path, "--encoder", other_arch)
    assert f"{other_arch}: the weights do not fit encoder xresnet1d101 (" in line and " missing: " in line
    changed = dict(weights)
    first = next(iter(changed))
    changed[first] = torch.zeros(3, 3)
    changed["head.weight"] = torch.zeros(1)
    keys = _export(tmp_path / "keys.pt", changed)
    line = _evaluate(capsys, store, tmp_path, "--encoder", keys)
    assert line.endswith(f"{keys}: the weights do not fit encoder xresnet1d50 (1 unexpected: head.weight; "
                         f"1 of another shape: {first} [3, 3] != {list(weights[first].shape)})")
    unknown = _export(tmp_path / "unknown.pt", weights, encoder="resnet9")
    assert "encoder 'resnet9' is not one ecg_ray builds" in _evaluate(capsys, store, tmp_path, "--encoder", unknown)


def test_pretrained_run_whose_weights_do_not_fit(weights, store, tmp_path, capsys):
    run = tmp_path / "simclr-run"
    (run / "checkpoint_000000").mkdir(parents=True)
    model = {f"encoder.{k}": v for k, v in weights.items() if "stages.3" not in k}  # the last stage lost
    torch.save({"format": CHECKPOINT_FORMAT, "model": model, "config": to_dict(Config()), "epoch": 0},
               run / "checkpoint_000000" / STATE_FILE)
    line = _evaluate(capsys, store, tmp_path, "--pretrained", run)
    assert f"{run / 'checkpoint_000000'}: the weights do not fit encoder xresnet1d50 (" in line
    assert "missing: stages.3." in line


def test_a_fitting_encoder_passes_the_driver_checks(weights, store, tmp_path):
    import ray

    from ecg_ray.train.trainer import validate_evaluation

    good = _export(tmp_path / "good.pt", weights)
    ray_was_running = ray.is_initialized()
    validate_evaluation(load_config(EVAL_LINEAR, [f"data.store={store}", f"eval.encoder={good}"]))
    assert ray.is_initialized() == ray_was_running
