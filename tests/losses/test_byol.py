"""BYOL's 2 - 2 cos loss against a per-pair loop; the target branch gets no gradient."""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.losses import byol_loss, symmetric_byol_loss


def naive_byol(p: torch.Tensor, z: torch.Tensor) -> float:
    total = 0.0
    for pi, zi in zip(p, z, strict=True):
        cos = float(pi @ zi) / math.sqrt(float(pi @ pi) * float(zi @ zi))
        total += 2 - 2 * cos
    return total / p.shape[0]


def test_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    p, z = (torch.randn(7, 5, generator=g, dtype=torch.float64) for _ in range(2))
    assert byol_loss(p, z).item() == pytest.approx(naive_byol(p, z), rel=1e-12)


def test_extremes_and_scale_invariance():
    p = torch.randn(4, 6, dtype=torch.float64)
    assert byol_loss(p, 5 * p).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, abs=1e-12)


def test_target_is_detached():
    p = torch.randn(3, 4, requires_grad=True)
    z = torch.randn(3, 4, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


def test_symmetric_is_the_sum_of_both_directions():
    g = torch.Generator().manual_seed(1)
    p1, z2, p2, z1 = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(4))
    expected = naive_byol(p1, z2) + naive_byol(p2, z1)
    assert symmetric_byol_loss(p1, z2, p2, z1).item() == pytest.approx(expected, rel=1e-12)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        byol_loss(torch.randn(3, 4), torch.randn(3, 5))
