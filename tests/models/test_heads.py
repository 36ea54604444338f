"""Projection and classifier heads: layer layout per method, shapes, build_head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ecg_ray.errors import ConfigError
from ecg_ray.models.heads import CPCClassifierHead, LinearHead, MLPHead, build_head


def kinds(module: nn.Module) -> list[str]:
    return [type(m).__name__ for m in module.net]


def test_simclr_projection_has_no_bn():
    head = MLPHead(512, 512, 16, batch_norm=False)
    assert kinds(head) == ["Linear", "ReLU", "Linear"]
    assert head(torch.randn(2, 512)).shape == (2, 16)


def test_byol_projector_and_predictor():
    proj = MLPHead(512, 512, 16)
    pred = MLPHead(16, 512, 16)
    assert kinds(proj) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert pred(proj(torch.randn(2, 512))).shape == (2, 16)


def test_swav_head_and_options():
    head = MLPHead(512, 2048, 128)
    assert head(torch.randn(2, 512)).shape == (2, 128)
    assert kinds(MLPHead(8, 16, 4, num_layers=3, last_bn=True)) == [
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
        "BatchNorm1d",
    ]
    assert kinds(MLPHead(8, 16, 4, num_layers=1)) == ["Linear"]
    with pytest.raises(ValueError):
        MLPHead(8, 16, 4, num_layers=0)


def test_cpc_classifier_head_layout():
    head = CPCClassifierHead(1536, 71)
    assert kinds(head) == ["BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert [m.p for m in head.net if isinstance(m, nn.Dropout)] == [0.25, 0.5]
    lin = [m for m in head.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(1536, 512), (512, 71)]


@pytest.mark.parametrize(
    "head",
    [MLPHead(512, 512, 16), LinearHead(512, 5), CPCClassifierHead(1536, 5)],
    ids=["mlp", "linear", "cpc"],
)
def test_train_eval_and_gradients(head):
    head.train()
    out = head(torch.randn(2, head.in_dim))
    assert out.shape == (2, head.out_dim)
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    head.eval()
    with torch.no_grad():
        assert head(torch.randn(2, head.in_dim)).shape == (2, head.out_dim)


def test_build_head():
    assert isinstance(build_head("linear", 512, 5), LinearHead)
    mlp = build_head("mlp", 1536, 71)
    assert isinstance(mlp, CPCClassifierHead) and mlp.out_dim == 71
    with pytest.raises(ConfigError, match="linear, mlp"):
        build_head("transformer", 512, 5)
