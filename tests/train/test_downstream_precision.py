"""Downstream training honours train.precision: the forward under autocast, the loss in fp32, one read per epoch."""

from __future__ import annotations

import contextlib

import pytest
import torch

from ecg_ray.train.classifier import MultiLabelObjective
from ecg_ray.train.downstream import _train_epoch
from ecg_ray.train.step import precision_context


def _batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Fixed batches of signals and labels, as the stream gives them (``signal`` + ``labels``)."""
    g = torch.Generator().manual_seed(seed)
    return [{"signal": torch.randn(8, 12, 50, generator=g),
             "labels": (torch.rand(8, 3, generator=g) > 0.5).float()} for _ in range(n)]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(12, 4, 5), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, 3))


class _RecordingObjective(MultiLabelObjective):
    """The downstream objective, keeping each step's loss."""

    def __init__(self, network):
        super().__init__(network)
        self.losses: list[torch.Tensor] = []

    def __call__(self, batch):
        out = super().__call__(batch)
        self.losses.append(out["loss"].detach())
        return out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_epoch_in_the_configured_precision(precision):
    model = _model()
    seen = []
    model[3].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    autocast, scaler = precision_context(precision, torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    objective = _RecordingObjective(model)
    total, done = _train_epoch(objective, _batches(4), optimizer, scheduler, 3, torch.device("cpu"), autocast,
                               scaler)
    assert done == 3 and total.shape == () and total.dtype == torch.float32
    assert [loss.dtype for loss in objective.losses] == [torch.float32] * 3  # the loss in fp32 whatever the forward
    assert float(total) == pytest.approx(float(sum(objective.losses)), rel=1e-6)
    assert seen == [torch.bfloat16 if precision == "bf16" else torch.float32] * 3


def test_scaled_epoch_steps_and_matches_unscaled():
    """With a GradScaler (fp16 on a GPU) the steps are the same as without one when nothing overflows."""
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=1024.0)):
        model = _model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        _train_epoch(MultiLabelObjective(model), _batches(3), optimizer, scheduler, 3, torch.device("cpu"),
                     contextlib.nullcontext, scaler)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(results[0], torch.cat([p.detach().flatten() for p in _model().parameters()]))
