"""NT-Xent against an independent loop over anchors, exact self-masking, and closed-form cases."""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.losses import nt_xent


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """Loop over the 2N anchors: -log(exp(s_pos / t) / sum_{k != i} exp(s_ik / t))."""
    views = [row for row in z1] + [row for row in z2]
    n = z1.shape[0]

    def cos(a, b):
        return float(a @ b) / (float(a.norm()) * float(b.norm()))

    total = 0.0
    for i in range(2 * n):
        pos = i + n if i < n else i - n
        numerator = math.exp(cos(views[i], views[pos]) / temperature)
        denominator = sum(math.exp(cos(views[i], views[k]) / temperature) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


def reference_defect_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """The reference's variant: all 2N terms in the denominator minus e (not exp(1/t))."""
    views = [row / row.norm() for row in z1] + [row / row.norm() for row in z2]
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = i + n if i < n else i - n
        numerator = math.exp(float(views[i] @ views[pos]) / temperature)
        denominator = sum(math.exp(float(views[i] @ views[k]) / temperature) for k in range(2 * n)) - math.e
        total += -math.log(numerator / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("gather", [True, False])
def test_matches_naive_loop(temperature, gather):
    g = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(2))
    got = nt_xent(z1, z2, temperature=temperature, gather=gather)
    assert got.item() == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-10)


def test_self_term_is_masked_exactly_not_by_subtracting_e():
    g = torch.Generator().manual_seed(1)
    z1, z2 = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(2))
    got = nt_xent(z1, z2, temperature=0.5).item()
    defect = reference_defect_nt_xent(z1, z2, 0.5)
    # At tau = 0.5 the reference leaves exp(2) - e ~ 4.67 of self-similarity in each denominator.
    assert abs(got - defect) > 0.05
    assert got == pytest.approx(naive_nt_xent(z1, z2, 0.5), rel=1e-10)


def test_closed_form_for_orthogonal_samples():
    # Views identical, samples orthogonal: s_pos = 1, the 2N - 2 negatives have s = 0.
    n, tau = 4, 0.5
    z = torch.eye(n, dtype=torch.float64) * 3.0  # scale must not matter: normalised inside
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    assert nt_xent(z, z.clone(), temperature=tau).item() == pytest.approx(expected, rel=1e-12)


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.5), (z1, z2))


def test_half_precision_and_autocast_are_computed_in_float32():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    full = nt_xent(z1, z2, temperature=0.1)
    half = nt_xent(z1.bfloat16(), z2.bfloat16(), temperature=0.1)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = nt_xent(z1, z2, temperature=0.1)
    assert auto.dtype == torch.float32
    assert auto.item() == pytest.approx(full.item(), rel=1e-6)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), temperature=0.0)
