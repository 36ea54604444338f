"""JEPA's regression loss against hand-written references on a tiny case."""

from __future__ import annotations

import pytest
import torch

from ecg_ray.losses.jepa import jepa_loss

P = [[[1.0, -2.0], [0.5, 0.0]], [[0.0, 3.0], [-1.0, 1.0]]]
Z = [[[0.0, 0.0], [0.5, 2.0]], [[1.5, 1.0], [-1.0, 0.5]]]


def elements():
    return [(p, z) for pb, zb in zip(P, Z, strict=True) for pr, zr in zip(pb, zb, strict=True)
            for p, z in zip(pr, zr, strict=True)]


def smooth_l1(d: float) -> float:
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


@pytest.mark.parametrize(("kind", "reference"), [
    ("l1", lambda p, z: abs(p - z)),
    ("l2", lambda p, z: (p - z) ** 2),
    ("smooth_l1", lambda p, z: smooth_l1(p - z)),
])
def test_loss_is_the_mean_elementwise_distance(kind, reference):
    expected = sum(reference(p, z) for p, z in elements()) / 8
    assert float(jepa_loss(torch.tensor(P), torch.tensor(Z), kind)) == pytest.approx(expected)


def test_layer_norm_targets_normalise_each_embedding():
    z = torch.tensor(Z)
    normed = [[[(v - sum(row) / 2) / ((sum((w - sum(row) / 2) ** 2 for w in row) / 2 + 1e-5) ** 0.5) for v in row]
               for row in batch] for batch in Z]
    p = torch.zeros_like(z)
    expected = sum(abs(v) for batch in normed for row in batch for v in row) / 8
    assert float(jepa_loss(p, z, "l1", layer_norm_targets=True)) == pytest.approx(expected, rel=1e-5)


def test_only_the_prediction_gets_a_gradient():
    p = torch.tensor(P, requires_grad=True)
    z = torch.tensor(Z, requires_grad=True)
    jepa_loss(p, z, "l2").backward()
    torch.testing.assert_close(p.grad, 2 * (p.detach() - z.detach()) / 8)
    assert z.grad is None


def test_bad_shapes_and_kind_are_refused():
    with pytest.raises(ValueError, match="equal shape"):
        jepa_loss(torch.zeros(2, 3, 4), torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="unknown JEPA loss 'cos'"):
        jepa_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), "cos")
