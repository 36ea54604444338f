"""Fine-tuning phases: head only, then all layers from the best head-only epoch, on 1 and 2 workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecg_ray.config import load_config
from ecg_ray.errors import ConfigError
from ecg_ray.train.downstream import plan_phases
from tests.cli import run_json

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"


def test_phases_split_the_epochs_and_take_the_finetune_lr():
    config = load_config(overrides=["eval.mode=finetune", "eval.head_only_epochs=50", "train.epochs=70",
                                    "optim.lr=1e-3", "eval.finetune_lr=1e-4"])
    head, rest = plan_phases(config)
    assert (head.name, head.first_epoch, head.epochs, head.train_encoder, head.lr) == ("head_only", 0, 50, False, 1e-3)
    assert (rest.name, rest.first_epoch, rest.epochs, rest.train_encoder, rest.lr) == ("all_layers", 50, 20, True, 1e-4)
    # without finetune_lr the all-layers phase keeps optim.lr
    config.eval.finetune_lr = None
    assert plan_phases(config)[1].lr == 1e-3
    # linear / supervised / finetune without head-only epochs: one phase over every epoch
    for overrides, trains_encoder in ((["eval.mode=linear"], False), (["eval.mode=supervised"], True),
                                      (["eval.mode=finetune"], True)):
        (only,) = plan_phases(load_config(overrides=[*overrides, "train.epochs=7"]))
        assert (only.first_epoch, only.epochs, only.train_encoder) == (0, 7, trains_encoder)


def test_head_only_epochs_must_leave_all_layer_epochs():
    config = load_config(overrides=["eval.mode=finetune", "eval.head_only_epochs=5", "train.epochs=5"])
    with pytest.raises(ConfigError, match="head_only_epochs=5 leaves no epoch"):
        plan_phases(config)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_finetune_with_head_only_epochs(workers, ray_session, ptbxl_store, tmp_path, capsys):
    """Under DDP the encoder is frozen then unfrozen: each phase wraps the model anew (it used to fail
    with "Expected to have finished reduction" on 2 workers); selection is among the last phase."""
    import torch

    from ecg_ray.models import build_encoder
    from ecg_ray.train.checkpoint import ENCODER_FORMAT

    torch.manual_seed(3)
    encoder = tmp_path / "encoder.pt"
    torch.save({"format": ENCODER_FORMAT, "encoder": "xresnet1d50", "state_dict": build_encoder("xresnet1d50").state_dict(),
                "method": "none", "epoch": 0, "fs": 100.0, "input_length": 250, "config": {},
                "ecg_ray_version": "test"}, encoder)
    summary = run_json(capsys, "evaluate", "--config", JOBS / "eval-finetune.yaml", "--store", ptbxl_store,
                       "--encoder", encoder, "--epochs", 3, "--workers", workers, "--output", tmp_path / "runs",
                       "--set", "eval.head_only_epochs=2", "--set", "eval.finetune_lr=0.001",
                       "--set", "train.batch_size=32", "--set", "train.max_steps_per_epoch=2",
                       "--set", "eval.bootstrap=50", "--set", "optim.schedule=constant")
    evaluation = json.loads((Path(summary["run_dir"]) / "evaluation.json").read_text())
    head, rest = evaluation["phases"]
    assert (head["phase"], head["epochs"], rest["phase"], rest["epochs"]) == ("head_only", 2, "all_layers", 1)
    assert [h["phase"] for h in evaluation["history"]] == ["head_only", "head_only", "all_layers"]
    assert head["best_epoch"] in (0, 1)
    assert summary["best_epoch"] == 2  # selected among the all-layers epochs only
    assert evaluation["history"][2]["lr"] == pytest.approx(0.001)
    assert 0.0 <= summary["test_macro_auc"] <= 1.0
    assert (Path(summary["run_dir"]) / "test_predictions.npz").exists()
