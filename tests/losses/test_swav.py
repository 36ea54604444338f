"""Sinkhorn codes and the swapped-prediction loss against loop implementations.

Convention checked here (see ecg_ray.losses.swav): the returned Q has rows (samples) summing
to exactly 1; before the final rescale by B, rows sum to 1/B and columns (prototypes) to about
1/K, i.e. after it columns sum to about B/K, exactly so at the Sinkhorn fixed point.
"""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.losses import sinkhorn, swav_loss


def naive_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> list[list[float]]:
    """Caron et al.'s algorithm with Python loops, in their (prototypes x samples) orientation."""
    b, k = scores.shape
    q = [[math.exp(float(scores[i, j]) / epsilon) for i in range(b)] for j in range(k)]
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        for j in range(k):  # every prototype gets mass 1/K
            s = sum(q[j])
            q[j] = [v / s / k for v in q[j]]
        for i in range(b):  # every sample gets mass 1/B
            s = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / s / b
    return [[q[j][i] * b for j in range(k)] for i in range(b)]  # back to (samples x prototypes)


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_naive_loop(iterations):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 4, generator=g) * 0.5
    got = sinkhorn(scores, epsilon=0.05, iterations=iterations)
    expected = torch.tensor(naive_sinkhorn(scores.double(), 0.05, iterations), dtype=torch.float32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_sinkhorn_marginals():
    g = torch.Generator().manual_seed(1)
    b, k = 32, 8
    scores = torch.nn.functional.normalize(torch.randn(b, k, generator=g), dim=1)
    q = sinkhorn(scores, epsilon=0.05, iterations=3)
    assert q.shape == (b, k) and q.dtype == torch.float32 and (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b))  # rows: exactly 1 (last step)
    assert q.sum().item() == pytest.approx(b, rel=1e-6)
    # Columns approach B/K as iterations increase (3 is the paper's setting, not yet converged
    # at eps = 0.05, where the start is a very sharp softmax).
    deviation = [(sinkhorn(scores, 0.05, it).double().sum(dim=0) - b / k).abs().max().item()
                 for it in (3, 10, 100)]
    assert deviation[0] > deviation[1] > deviation[2]
    assert deviation[2] < 1e-3


def test_sinkhorn_is_shift_invariant_and_does_not_overflow():
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(10, 5, generator=g)
    q = sinkhorn(scores)
    torch.testing.assert_close(sinkhorn(scores + 100.0), q)
    big = sinkhorn(scores * 1000.0)  # exp(S / eps) over- and underflows even in float64
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big.sum(dim=1), torch.ones(10))
    # exp(S / eps) up to exp(200) overflows float32; the log-domain result still matches the
    # float64 loop, where it has no overflow yet.
    scaled = scores * 3.0
    expected = torch.tensor(naive_sinkhorn(scaled.double(), 0.05, 3), dtype=torch.float32)
    torch.testing.assert_close(sinkhorn(scaled), expected, rtol=1e-5, atol=1e-7)


def test_sinkhorn_dtype_and_no_grad():
    scores = torch.randn(4, 3, requires_grad=True)
    q = sinkhorn(scores.half())
    assert q.dtype == torch.float32 and not q.requires_grad
    assert sinkhorn(scores.double()).dtype == torch.float64


def naive_swav(scores, assignments, temperature):
    n_crops = len(scores)
    loss = 0.0
    for a, q in assignments.items():
        sub = 0.0
        for v in range(n_crops):
            if v == a:
                continue
            per_sample = []
            for i in range(scores[v].shape[0]):
                logits = [float(x) / temperature for x in scores[v][i]]
                log_z = math.log(sum(math.exp(x) for x in logits))
                per_sample.append(-sum(float(q[i, j]) * (logits[j] - log_z) for j in range(len(logits))))
            sub += sum(per_sample) / len(per_sample)
        loss += sub / (n_crops - 1)
    return loss / len(assignments)


@pytest.mark.parametrize("n_crops,assigned", [(2, (0, 1)), (4, (0, 1)), (3, (2,))])
def test_swav_loss_matches_naive_loop(n_crops, assigned):
    g = torch.Generator().manual_seed(3)
    scores = [torch.randn(5, 7, generator=g, dtype=torch.float64) for _ in range(n_crops)]
    assignments = {a: sinkhorn(scores[a]) for a in assigned}
    got = swav_loss(scores, assignments, temperature=0.1)
    assert got.item() == pytest.approx(naive_swav(scores, assignments, 0.1), rel=1e-10)


def test_swav_loss_gradient_flows_to_scores_not_codes():
    scores = [torch.randn(4, 3, requires_grad=True) for _ in range(2)]
    codes = {0: torch.softmax(torch.randn(4, 3), dim=1).requires_grad_()}
    swav_loss(scores, codes).backward()
    assert scores[1].grad is not None and scores[1].grad.abs().sum() > 0
    assert scores[0].grad is None  # crop 0 is only the target here
    assert codes[0].grad is None


def test_swav_loss_validates_inputs():
    s = [torch.randn(4, 3), torch.randn(4, 3)]
    with pytest.raises(ValueError, match="crop 2"):
        swav_loss(s, {2: torch.rand(4, 3)})
    with pytest.raises(ValueError, match="at least 2"):
        swav_loss(s[:1], {0: torch.rand(4, 3)})
    with pytest.raises(ValueError, match="shape"):
        swav_loss(s, {0: torch.rand(4, 2)})


def test_sinkhorn_runs_in_float32_for_float32_scores():
    """fp64 runs at 1/64 of the fp32 rate on A10G-class GPUs: no float64 op for float32 scores."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Dtypes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.seen.update(t.dtype for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            return out

    scores = torch.randn(16, 8, generator=torch.Generator().manual_seed(3))
    with Dtypes() as mode:
        q = sinkhorn(scores)
    assert torch.float64 not in mode.seen and torch.float32 in mode.seen
    torch.testing.assert_close(q, sinkhorn(scores.double()).float(), rtol=1e-5, atol=1e-7)
    with Dtypes() as mode:
        sinkhorn(scores.double())
    assert torch.float64 in mode.seen  # float64 references stay float64
