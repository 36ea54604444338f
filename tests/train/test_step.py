"""The shared training step: a step that fp16's GradScaler skipped moves nothing, the EMA included."""

from __future__ import annotations

import contextlib

import torch

from ecg_ray.config import load_config
from ecg_ray.methods import build_method
from ecg_ray.train.step import build_optimization, training_step


def _byol():
    config = load_config(overrides=["method.name=byol", "model.encoder=xresnet1d50", "train.batch_size=8",
                                    "train.epochs=1"])
    torch.manual_seed(0)
    method = build_method(config, fs=100.0)
    method.set_generator(torch.Generator().manual_seed(0))
    method.on_train_start(10)
    optimizer, scheduler = build_optimization(config, method, 10)
    return method, optimizer, scheduler


def _target(method) -> dict[str, torch.Tensor]:
    """The target's parameters (its BN buffers also see its own forward pass, not only the EMA)."""
    return {k: v.detach().clone() for k, v in method.target.named_parameters()}


def _params(module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters())


def test_skipped_scaler_step_leaves_weights_and_ema_alone():
    method, optimizer, scheduler = _byol()
    x = 0.3 * torch.randn(8, 12, 250, generator=torch.Generator().manual_seed(1))
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    # A real step first: online and target then differ, so an EMA update would show.
    training_step(method, method, {"signal": x}, optimizer, scheduler, contextlib.nullcontext, scaler, 1)
    online, target = _params(method.encoder), _target(method)
    online = {k: v.detach().clone() for k, v in online.items()}
    # An overflowing sample makes the gradients non-finite, as an fp16 overflow would: GradScaler skips.
    bad = x.clone()
    bad[0] = float("inf")
    training_step(method, method, {"signal": bad}, optimizer, scheduler, contextlib.nullcontext, scaler, 2)
    assert scaler.get_scale() < 1.0  # it did skip
    assert all(torch.equal(v, online[k]) for k, v in _params(method.encoder).items())
    after = _params(method.target)
    assert all(torch.equal(after[k], target[k]) for k in target)  # the EMA did not advance


def test_unscaled_step_advances_the_ema():
    method, optimizer, scheduler = _byol()
    target = _target(method)
    x = 0.3 * torch.randn(8, 12, 250, generator=torch.Generator().manual_seed(1))
    loss = training_step(method, method, {"signal": x}, optimizer, scheduler, contextlib.nullcontext, None, 1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    after = _params(method.target)
    assert any(not torch.equal(after[k], target[k]) for k in target)
