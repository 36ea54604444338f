"""The by-id contrastive loss against a plain loop over anchors, and its special cases.

Positives are the other rows with the anchor's id; candidates are all rows but the anchor itself
(``ecg_ray.losses.contrastive``). The 2-process gloo check lives in tests/test_distributed.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.losses.contrastive import contrastive_loss
from ecg_ray.losses.ntxent import nt_xent


def naive_contrastive(z: torch.Tensor, ids: list[int], temperature: float) -> float:
    """-log(sum_{p: id_p = id_i, p != i} exp(s_ip / t) / sum_{k != i} exp(s_ik / t)), averaged over anchors
    that have a positive."""
    rows = [row / row.norm() for row in z]
    terms = []
    for i, anchor in enumerate(rows):
        positives = [k for k in range(len(rows)) if k != i and ids[k] == ids[i]]
        if not positives:
            continue
        numerator = sum(math.exp(float(anchor @ rows[k]) / temperature) for k in positives)
        denominator = sum(math.exp(float(anchor @ rows[k]) / temperature) for k in range(len(rows)) if k != i)
        terms.append(-math.log(numerator / denominator))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_several_positives_per_anchor_match_the_loop(temperature):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(9, 6, generator=g, dtype=torch.float64)
    ids = [0, 1, 0, 2, 1, 0, 2, 3, 3]  # groups of 3, 2, 2 and 2 rows
    got = contrastive_loss(z, torch.tensor(ids), temperature=temperature, gather=False)
    assert got.item() == pytest.approx(naive_contrastive(z, ids, temperature), rel=1e-10)


def test_an_anchor_without_positive_is_left_out_and_gets_no_gradient_nan():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ids = [0, 0, 1, 1, 7]  # the last row (a patient seen once) has no positive
    loss = contrastive_loss(z, torch.tensor(ids), temperature=0.5, gather=False)
    assert loss.item() == pytest.approx(naive_contrastive(z.detach(), ids, 0.5), rel=1e-10)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad[4].abs().sum() > 0  # still a negative of the others


def test_no_positive_at_all_gives_zero_not_nan():
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = contrastive_loss(z, torch.tensor([0, 1, 2]), gather=False)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


def test_two_views_with_sample_ids_are_nt_xent():
    g = torch.Generator().manual_seed(2)
    z1, z2 = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(2))
    sample = torch.arange(6)
    by_id = contrastive_loss(torch.cat([z1, z2]), torch.cat([sample, sample]), temperature=0.5, gather=False)
    assert by_id.item() == pytest.approx(nt_xent(z1, z2, temperature=0.5, gather=False).item(), rel=1e-12)


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda a: contrastive_loss(a, ids, 0.5, gather=False), (z,))


def test_bad_shapes_and_temperature_are_refused():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"ids \(n,\)"):
        contrastive_loss(z, torch.zeros(3, dtype=torch.long), gather=False)
    with pytest.raises(ValueError, match="temperature must be positive"):
        contrastive_loss(z, torch.arange(4), temperature=0.0, gather=False)
