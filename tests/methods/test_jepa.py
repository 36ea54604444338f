"""The JEPA method: its EMA target follows the context encoder on schedule, every trainable parameter
learns, the loss falls on real crops, and export, --best and the probe take the target encoder."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from ecg_ray.config import load_config, to_dict
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import cut
from ecg_ray.errors import ConfigError
from ecg_ray.methods import build_method
from ecg_ray.methods.jepa import JEPA
from ecg_ray.models.vit1d import ViT1d
from ecg_ray.train.checkpoint import encoder_weights
from ecg_ray.train.pretrain import track_best
from ecg_ray.train.step import build_optimization, training_step

#: ViT-XS with a 2-block predictor: the method as configured, CPU-sized
SMALL = ["method.name=jepa", "model.encoder=vit1d_xs", "data.crop=250", "train.batch_size=16",
         "jepa.predictor_depth=2"]


def jepa(*overrides: str, total_steps: int = 100):
    config = load_config(overrides=[*SMALL, *overrides])
    torch.manual_seed(0)
    method = build_method(config, fs=100.0)
    method.set_generator(torch.Generator().manual_seed(0))
    method.on_train_start(total_steps)
    method.train()
    return method


@pytest.fixture(scope="module")
def crops(ptbxl_store) -> torch.Tensor:
    store = EcgStore(ptbxl_store)
    rng = np.random.default_rng(0)
    return torch.from_numpy(np.stack([cut(store.signal(i), rng.integers(0, 700, 1), 250)[0] for i in range(16)]))


def test_momentum_schedules():
    method = jepa("jepa.momentum=0.998", "jepa.final_momentum=0.9995")
    assert method.momentum_at(0) == pytest.approx(0.998)
    assert method.momentum_at(50) == pytest.approx(0.99875)  # linear, as ECG-JEPA
    assert method.momentum_at(100) == pytest.approx(0.9995)
    cosine = jepa("jepa.momentum=0.99", "jepa.final_momentum=1.0", "jepa.momentum_schedule=cosine")
    assert cosine.momentum_at(25) == pytest.approx(1 - 0.01 * (np.cos(np.pi / 4) + 1) / 2)  # BYOL's
    assert cosine.momentum_at(100) == pytest.approx(1.0)


def test_the_target_follows_the_context_encoder_by_the_scheduled_momentum(crops):
    method = jepa()
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    before = {k: v.clone() for k, v in method.target_encoder.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in method.encoder.state_dict().items())  # starts as a copy
    method({"signal": crops})["loss"].backward()
    optimizer.step()
    method.after_optimizer_step(30)
    tau = method.momentum_at(30)
    assert method.momentum == tau and 0.998 < tau < 0.9995
    student = method.encoder.state_dict()
    for key, value in method.target_encoder.state_dict().items():
        torch.testing.assert_close(value, tau * before[key] + (1 - tau) * student[key], msg=key)
    moved = [k for k, v in method.target_encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert len(moved) > len(before) // 2  # not only a few tensors: the whole encoder moves
    assert not any(p.requires_grad for p in method.target_encoder.parameters())


def test_every_trainable_parameter_gets_a_gradient_and_the_target_none(crops):
    method = jepa()
    out = method({"signal": crops})
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert all(p.grad is None for p in method.target_encoder.parameters())
    assert method.embedding_dim == 192 and method.embedding_std is not None


def test_the_loss_falls_on_real_crops(crops):
    config = load_config(overrides=[*SMALL, "optim.lr=0.002", "optim.warmup_epochs=0", "jepa.predictor_dim=16",
                                    "jepa.predictor_heads=2"])
    torch.manual_seed(0)  # a narrow ViT (the method as configured, an encoder CPU tests can train in seconds)
    method = JEPA(config, ViT1d(12, dim=32, depth=2, heads=2), fs=100.0)
    method.set_generator(torch.Generator().manual_seed(0))
    method.on_train_start(30)
    optimizer, scheduler = build_optimization(config, method, 30)
    losses = [float(training_step(method, method, {"signal": crops}, optimizer, scheduler, contextlib.nullcontext,
                                  None, step)) for step in range(1, 31)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_export_takes_the_target_unless_configured_otherwise():
    target = jepa()
    assert target.exported_encoder() is target.target_encoder
    context = jepa("jepa.export=context")
    assert context.exported_encoder() is context.encoder
    with torch.no_grad():  # make the two encoders differ
        for p in target.target_encoder.parameters():
            p.add_(1.0)
    state = {"config": to_dict(target.config), "model": target.state_dict()}
    weights = encoder_weights(state)
    assert weights.keys() == target.encoder.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in target.target_encoder.state_dict().items())
    state["config"]["jepa"]["export"] = "context"
    assert all(torch.equal(encoder_weights(state)[k], v) for k, v in target.encoder.state_dict().items())
    best = track_best(None, {"val_macro_auc": 0.7}, 3, target)  # --best keeps the target's weights too
    assert all(torch.equal(best["encoder"][k], v) for k, v in target.target_encoder.state_dict().items())
    # a downstream run's classifier keeps its encoder under encoder., whatever method.name says
    classifier = {"config": to_dict(target.config), "model": {"encoder.w": torch.ones(1), "head.w": torch.zeros(1)}}
    assert list(encoder_weights(classifier)) == ["w"]


@pytest.mark.parametrize(("override", "message"), [
    ("model.encoder=xresnet1d50", "method jepa needs a patch-token encoder"),
    ("data.crop=5", "data.crop=5 gives 1 patch(es) of 5 samples"),
    ("jepa.min_keep=0.5", "jepa.min_keep=0.5 is above jepa.max_keep=0.25"),
    ("jepa.loss=cos", "jepa.loss must be one of l1, smooth_l1, l2"),
    ("jepa.predictor_heads=5", "jepa.predictor_dim=96 is not divisible by jepa.predictor_heads=5"),
])
def test_bad_settings_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError) as error:
        config = load_config(overrides=[*SMALL, override])
        with torch.device("meta"):
            build_method(config, fs=100.0)
    assert message in str(error.value) and "\n" not in str(error.value)
