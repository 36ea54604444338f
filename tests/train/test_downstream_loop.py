"""Downstream training runs through pretraining's loop: the same step, optimizer choice, precision,
finite-loss check and checkpoint layout.

The fast tests drive the downstream epoch directly (no Ray); the slow ones run ``ecg-ray evaluate``
on the PTB-XL sample for a few steps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from ecg_ray.config import load_config
from ecg_ray.models import Encoder
from ecg_ray.optim import LARS, warmup_cosine
from ecg_ray.train import downstream, step
from ecg_ray.train.checkpoint import load_state, save_checkpoint, training_state
from ecg_ray.train.classifier import Classifier, MultiLabelObjective, build_classifier, parameter_groups
from ecg_ray.train.downstream import _train_epoch, plan_phases
from ecg_ray.train.step import (
    TrainingDivergedError,
    build_optimization,
    check_epoch_loss,
    epoch_means,
    precision_context,
)
from tests.cli import run_json

ROOT = Path(__file__).resolve().parents[2]
PAPER_EVAL_JOBS = ["cpc-finetune.yaml", "cpc-linear.yaml", "eval-finetune-discriminative.yaml", "eval-finetune.yaml",
                   "eval-linear.yaml", "eval-supervised-cpc.yaml", "eval-supervised.yaml"]
CPU = torch.device("cpu")
FP32 = precision_context("fp32", CPU)


def _batches(n: int, seed: int = 0, n_labels: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"signal": torch.randn(8, 12, 64, generator=g),
             "labels": (torch.rand(8, n_labels, generator=g) > 0.5).float()} for _ in range(n)]


class _SmallEncoder(Encoder):
    """Three layer groups with parameters (stem conv, its norm, a block) under the default declarations."""

    def __init__(self):
        super().__init__()
        self.feature_dim, self.downsample = 8, 1
        self.stem = nn.Conv1d(12, 8, 5)
        self.norm = nn.BatchNorm1d(8)
        self.block = nn.Sequential(nn.Conv1d(8, 8, 3), nn.BatchNorm1d(8), nn.ReLU())

    def forward(self, x):
        return self.block(torch.relu(self.norm(self.stem(x)))).mean(-1)


def _small_classifier(freeze: bool = False) -> Classifier:
    """A classifier with a three-group encoder and a linear head (same weights on every call)."""
    torch.manual_seed(0)
    return Classifier(_SmallEncoder(), nn.Linear(8, 3), freeze_encoder=freeze)


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _train(config, model: Classifier, steps: int = 3) -> Classifier:
    """``steps`` downstream steps (fp32) with the optimizer the config names, through the real epoch."""
    optimizer, scheduler = build_optimization(config, parameter_groups(model, config), steps, epochs=1)
    _train_epoch(MultiLabelObjective(model), _batches(steps), optimizer, scheduler, steps, CPU, *FP32)
    return model


def _config(*overrides: str):
    return load_config(overrides=["eval.mode=finetune", "eval.discriminative_groups=layer_groups",
                                  "eval.discriminative_lr_factor=0.25", "optim.lr=0.01", "optim.weight_decay=0.1",
                                  "optim.warmup_epochs=0", "optim.schedule=constant", *overrides])


def test_downstream_steps_through_the_pretraining_step(monkeypatch):
    assert downstream.training_step is step.training_step  # one step function, not a copy
    calls = []

    def spy(*args):
        calls.append(args[-1])  # global_step
        return step.training_step(*args)

    monkeypatch.setattr(downstream, "training_step", spy)
    model = _small_classifier()
    config = _config()
    optimizer, scheduler = build_optimization(config, parameter_groups(model, config), 3, epochs=1)
    total, done = _train_epoch(MultiLabelObjective(model), _batches(5), optimizer, scheduler, 3, CPU, *FP32,
                               global_step=10)
    assert done == 3 and calls == [11, 12, 13]  # stops at `steps`, global steps counted on from before the epoch


@pytest.mark.parametrize("name, kind", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam),
                                        ("sgd", torch.optim.SGD), ("lars", LARS)])
def test_optim_name_is_honoured_with_the_discriminative_groups(name, kind):
    config = _config(f"optim.name={name}")
    model = _small_classifier()
    groups = parameter_groups(model, config)
    optimizer, _ = build_optimization(config, groups, 4, epochs=2)
    assert type(optimizer) is kind
    # each group keeps its discriminative lr and weight decay: head 0.01, then x0.25 per layer group down
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(g["lr"], g["weight_decay"])
                                                                              for g in groups]
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([0.01 * 0.25 ** 3, 0.01 * 0.25 ** 2,
                                                                              0.01 * 0.25, 0.01])


def test_sgd_and_adamw_train_differently_and_sgd_is_torchs():
    adamw = _train(_config("optim.name=adamw"), _small_classifier())
    sgd = _train(_config("optim.name=sgd", "optim.momentum=0.8"), _small_classifier())
    start = _weights(_small_classifier())
    assert not torch.equal(_weights(adamw), start) and not torch.equal(_weights(sgd), start)
    assert not torch.allclose(_weights(adamw), _weights(sgd))
    # hand-built reference: torch's SGD over the same groups with optim.momentum, constant lr
    config = _config("optim.name=sgd", "optim.momentum=0.8")
    reference = _small_classifier()
    optimizer = torch.optim.SGD(parameter_groups(reference, config), lr=0.01, momentum=0.8)
    for batch in _batches(3):
        loss = nn.functional.binary_cross_entropy_with_logits(reference(batch["signal"]), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(_weights(sgd), _weights(reference))


def _previous_epoch(model, batches, optimizer, scheduler) -> None:
    """The downstream epoch as it was before it shared pretraining's step (fp32 branch), for fidelity."""
    loss_fn = nn.BCEWithLogitsLoss()
    for batch in batches:
        loss = loss_fn(model(batch["signal"]).float(), batch["labels"].float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("job", ["eval-finetune-discriminative.yaml", "eval-linear.yaml", "cpc-finetune.yaml"])
def test_paper_job_settings_train_bit_for_bit_as_before(job):
    """The paper jobs name no optimizer and got AdamW(groups, lr, betas) from the old loop; optim.name's default
    (adamw) through the shared builder gives the same weights, bit for bit, on a small network."""
    config = load_config(ROOT / "jobs" / "paper" / job)
    assert config.optim.name == "adamw"
    results = []
    for new in (False, True):
        model = _small_classifier(freeze=config.eval.mode == "linear")
        phase = plan_phases(config)[-1]
        model.set_encoder_trainable(phase.train_encoder)
        groups = parameter_groups(model, config, lr=phase.lr)
        if new:
            optimizer, scheduler = build_optimization(config, groups, 4, epochs=phase.epochs, lr=phase.lr)
            _train_epoch(MultiLabelObjective(model), _batches(4), optimizer, scheduler, 4, CPU, *FP32)
        else:
            optimizer = torch.optim.AdamW(groups, lr=phase.lr, betas=tuple(config.optim.betas))
            scheduler = warmup_cosine(optimizer, int(round(config.optim.warmup_epochs * 4)), 4 * phase.epochs,
                                      config.optim.min_lr_ratio, config.optim.schedule)
            _previous_epoch(model, _batches(4), optimizer, scheduler)
        results.append(_weights(model))
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[1], _weights(_small_classifier()))


@pytest.mark.parametrize("job", PAPER_EVAL_JOBS)
def test_paper_jobs_get_the_optimizer_groups_they_had(job):
    """On the real networks: the same optimizer class and the same hyper-parameters in every group, every phase."""
    config = load_config(ROOT / "jobs" / "paper" / job)
    model = build_classifier(config, 71)
    for phase in plan_phases(config):
        model.set_encoder_trainable(phase.train_encoder)
        new, _ = build_optimization(config, parameter_groups(model, config, lr=phase.lr), 10, epochs=phase.epochs,
                                    lr=phase.lr)
        old = torch.optim.AdamW(parameter_groups(model, config, lr=phase.lr), lr=phase.lr,
                                betas=tuple(config.optim.betas))
        warmup_cosine(old, int(round(config.optim.warmup_epochs * 10)), 10 * phase.epochs,
                      config.optim.min_lr_ratio, config.optim.schedule)  # sets initial_lr as the new one's does
        assert type(new) is type(old)
        for ours, theirs in zip(new.param_groups, old.param_groups, strict=True):
            assert [id(p) for p in ours["params"]] == [id(p) for p in theirs["params"]]
            assert {k: v for k, v in ours.items() if k != "params"} == {k: v for k, v in theirs.items()
                                                                         if k != "params"}


def test_a_nan_loss_stops_a_downstream_epoch_with_the_pretraining_message():
    model = _small_classifier()
    config = _config()
    optimizer, scheduler = build_optimization(config, parameter_groups(model, config), 2, epochs=1)
    batches = _batches(2)
    batches[1]["signal"][0, 0, 0] = float("nan")
    total, done = _train_epoch(MultiLabelObjective(model), batches, optimizer, scheduler, 2, CPU, *FP32)
    (mean,) = epoch_means(total, done, world=1)
    with pytest.raises(TrainingDivergedError) as caught:
        check_epoch_loss(mean, 3)
    assert str(caught.value) == ("the mean loss of epoch 3 is nan: training diverged; lower optim.lr "
                                 "(or use train.precision=fp32)")


def test_epoch_means_reads_the_sums_back_once_as_means():
    assert epoch_means(torch.tensor([6.0, 3.0]), 3, world=1) == [2.0, 1.0]
    assert epoch_means(torch.tensor(5.0), 0, world=1) == [5.0]  # no step: no division by zero


def test_checkpoint_state_of_a_downstream_optimizer_round_trips(tmp_path):
    """training_state carries real optimizer / scheduler states (SGD momentum, LambdaLR factor) through a
    weights-only load."""
    config = _config("optim.name=sgd", "optim.warmup_epochs=1")
    model = _small_classifier()
    optimizer, scheduler = build_optimization(config, parameter_groups(model, config), 3, epochs=2)
    _train_epoch(MultiLabelObjective(model), _batches(3), optimizer, scheduler, 3, CPU, *FP32)
    best = {"epoch": 0, "metric": "val_macro_auc", "value": 0.5, "higher_is_better": True,
            "encoder": model.encoder.state_dict()}
    state = training_state(config, 100.0, model=model.state_dict(), optimizer=optimizer.state_dict(),
                           scheduler=scheduler.state_dict(), scaler=None, epoch=0, best=best)
    save_checkpoint(tmp_path, state, [{"epoch": 0}])
    loaded = load_state(tmp_path)
    assert set(loaded) == {"format", "model", "optimizer", "scheduler", "scaler", "method_state", "epoch",
                           "torch_rng", "config", "fs", "best"}
    assert loaded["config"]["optim"]["name"] == "sgd" and loaded["scaler"] == {} and loaded["best"]["value"] == 0.5
    again, again_scheduler = build_optimization(config, parameter_groups(model, config), 3, epochs=2)
    again.load_state_dict(loaded["optimizer"])
    again_scheduler.load_state_dict(loaded["scheduler"])
    buffers = [again.state[p]["momentum_buffer"] for g in again.param_groups for p in g["params"]]
    assert len(buffers) == sum(1 for _ in model.parameters()) and all(b.abs().sum() > 0 for b in buffers)
    assert again_scheduler.get_last_lr() == scheduler.get_last_lr()


# --- end to end: a few steps of `ecg-ray evaluate` on the PTB-XL sample ---

TINY = ["--config", ROOT / "jobs" / "smoke" / "eval-linear.yaml", "--epochs", 1, "--workers", 1,
        "--set", "train.batch_size=32", "--set", "train.max_steps_per_epoch=3", "--set", "eval.bootstrap=20",
        "--set", "train.torch_threads=1", "--set", "noise.types=[]"]


@pytest.mark.slow
def test_evaluate_honours_optim_name_and_precision_and_writes_pretrainings_checkpoint(ray_session, ptbxl_store,
                                                                                      tmp_path, capsys):
    from ecg_ray.train.checkpoint import export_encoder

    runs = {}
    for name, precision in (("adamw", "fp32"), ("sgd", "fp32"), ("sgd", "bf16")):
        summary = run_json(capsys, "evaluate", "--store", ptbxl_store, *TINY, "--output", tmp_path / name,
                           "--set", f"optim.name={name}", "--set", f"train.precision={precision}")
        evaluation = json.loads((Path(summary["run_dir"]) / "evaluation.json").read_text())
        runs[name, precision] = (summary, evaluation, load_state(summary["checkpoint"]))
    losses = {key: evaluation["history"][0]["loss"] for key, (_, evaluation, _) in runs.items()}
    assert all(0 < loss < 2 for loss in losses.values()), losses
    assert losses["adamw", "fp32"] != losses["sgd", "fp32"]  # the second and third steps moved differently
    assert losses["sgd", "bf16"] != losses["sgd", "fp32"]  # bf16 autocast on the CPU, and it trains
    for (name, _), (summary, _, state) in runs.items():
        assert state["config"]["optim"]["name"] == name and state["epoch"] == summary["best_epoch"] == 0
        slots = {key for per_param in state["optimizer"]["state"].values() for key in per_param}
        assert slots == ({"exp_avg", "exp_avg_sq", "step"} if name == "adamw" else {"momentum_buffer"})
        assert state["scheduler"]["last_epoch"] == 3 and state["best"]["metric"] == "val_macro_auc"
    # the best record is pretraining's: `ecg-ray export --best` reads an evaluation run the same way
    summary, _, state = runs["sgd", "fp32"]
    exported = export_encoder(Path(summary["run_dir"]), tmp_path / "encoder.pt", best=True)
    assert exported["selected_by"] == "val_macro_auc" and exported["epoch"] == 0
    payload = torch.load(tmp_path / "encoder.pt", weights_only=True)
    assert all(torch.equal(payload["state_dict"][k], state["model"][f"encoder.{k}"]) for k in payload["state_dict"])


@pytest.mark.slow
def test_a_nan_loss_stops_an_evaluation_with_the_pretraining_message(ray_session, ptbxl_store, tmp_path, capsys):
    from ecg_ray.cli import main

    code = main(["evaluate", "--store", str(ptbxl_store), *map(str, TINY), "--output", str(tmp_path),
                 "--set", "optim.lr=1.0e+30"])  # the head's weights overflow to inf within two steps
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.fullmatch(r"ecg-ray evaluate: error: the mean loss of epoch 0 is (nan|inf): training diverged; "
                        r"lower optim.lr \(or use train.precision=fp32\) \(worker 0; full traceback in .*\)\n?",
                        err), err


def test_an_unknown_optimizer_fails_before_ray_starts(ptbxl_store, tmp_path, capsys):
    from ecg_ray.cli import main

    assert main(["evaluate", "--store", str(ptbxl_store), "--config", str(ROOT / "jobs" / "smoke" / "eval-linear.yaml"),
                 "--output", str(tmp_path), "--set", "optim.name=rmsprop"]) == 2
    assert "optim.name: unknown optimizer 'rmsprop' (known: adamw, adam, lars, sgd)" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run directory: refused in the driver
