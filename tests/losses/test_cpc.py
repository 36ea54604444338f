"""CPC InfoNCE: loops over positions as the reference, chance level, perfect prediction, sampling."""

from __future__ import annotations

import math
import time

import pytest
import torch

from ecg_ray.losses import cpc_infonce, expected_initial_loss, sample_sequence_negatives


def naive_cpc(p: torch.Tensor, z: torch.Tensor, mode: str, idx: torch.Tensor | None) -> float:
    """One softmax per (sequence, position), built with Python loops; ``idx`` the sequence negatives."""
    b, t_len, _ = p.shape
    total = 0.0
    for i in range(b):
        for t in range(t_len):
            positive = float(p[i, t] @ z[i, t])
            scores = [positive]
            if mode in ("batch", "both"):
                scores += [float(p[i, t] @ z[j, t]) for j in range(b) if j != i]
            if mode in ("sequence", "both"):
                scores += [float(p[i, t] @ z[i, int(u)]) for u in idx[i, t]]
            top = max(scores)
            log_denominator = top + math.log(sum(math.exp(s - top) for s in scores))
            total += log_denominator - positive
    return total / (b * t_len)


@pytest.mark.parametrize("mode", ["batch", "sequence", "both"])
def test_matches_naive_loop_for_a_fixed_generator(mode):
    g = torch.Generator().manual_seed(0)
    p = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    z = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    got = cpc_infonce(p, z, negatives=mode, num_negatives=5, generator=torch.Generator().manual_seed(42))
    idx = sample_sequence_negatives(3, 7, 5, torch.Generator().manual_seed(42))
    assert got.item() == pytest.approx(naive_cpc(p, z, mode, idx), rel=1e-10)


def test_sampled_negatives_exclude_the_positive_and_cover_the_rest():
    idx = sample_sequence_negatives(2, 6, 2000, torch.Generator().manual_seed(1))
    assert idx.shape == (2, 6, 2000) and idx.dtype == torch.long
    positions = torch.arange(6).view(1, 6, 1)
    assert not (idx == positions).any()
    assert idx.min() >= 0 and idx.max() <= 5
    counts = torch.stack([(idx[:, t] == u).sum() for t in range(6) for u in range(6) if u != t]).double()
    # 2 x 2000 draws over 5 allowed positions per t: 800 expected each, sd ~ 25.
    assert counts.min() > 650 and counts.max() < 950


def test_generator_makes_the_loss_reproducible():
    p, z = torch.randn(2, 20, 8), torch.randn(2, 20, 8)
    a = cpc_infonce(p, z, num_negatives=4, generator=torch.Generator().manual_seed(3))
    b = cpc_infonce(p, z, num_negatives=4, generator=torch.Generator().manual_seed(3))
    c = cpc_infonce(p, z, num_negatives=4, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item() and a.item() != c.item()


@pytest.mark.parametrize("mode,negatives", [("sequence", 16), ("batch", 7), ("both", 7 + 16)])
def test_untrained_loss_is_log_of_one_plus_negatives(mode, negatives):
    g = torch.Generator().manual_seed(5)
    p = torch.randn(8, 60, 32, generator=g) * 0.05  # small scale: all scores ~ 0
    z = torch.randn(8, 60, 32, generator=g) * 0.05
    got = cpc_infonce(p, z, negatives=mode, num_negatives=16, generator=g).item()
    assert got == pytest.approx(expected_initial_loss(negatives), rel=0.05)
    assert expected_initial_loss(128) == pytest.approx(math.log(129))


@pytest.mark.parametrize("mode", ["batch", "sequence", "both"])
def test_perfect_prediction_gives_loss_near_zero(mode):
    g = torch.Generator().manual_seed(6)
    z = torch.randn(4, 50, 32, generator=g)
    got = cpc_infonce(z * 10, z, negatives=mode, num_negatives=16, generator=g).item()
    assert 0 <= got < 1e-3


def test_loss_is_a_mean_not_a_sum():
    g = torch.Generator().manual_seed(7)
    p, z = torch.randn(2, 10, 4, generator=g) * 0.01, torch.randn(2, 10, 4, generator=g) * 0.01
    long_p, long_z = p.repeat(1, 10, 1), z.repeat(1, 10, 1)
    short = cpc_infonce(p, z, "batch").item()
    assert cpc_infonce(long_p, long_z, "batch").item() == pytest.approx(short, rel=1e-6)


def test_gradients_reach_predictions_and_targets():
    p = torch.randn(3, 9, 4, requires_grad=True)
    z = torch.randn(3, 9, 4, requires_grad=True)
    cpc_infonce(p, z, negatives="both", num_negatives=3).backward()
    assert p.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


def test_reference_sequence_length_is_fast():
    # The reference's CPC (T = 988 positions, 128 negatives) looped in Python; vectorised, one
    # batch of 4 with 64 channels takes well under a second on two cores.
    p = torch.randn(4, 988, 64, requires_grad=True)
    z = torch.randn(4, 988, 64)
    start = time.perf_counter()
    cpc_infonce(p, z, num_negatives=128, generator=torch.Generator().manual_seed(0)).backward()
    assert time.perf_counter() - start < 5.0


def test_rejects_bad_arguments():
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="negatives must be one of"):
        cpc_infonce(x, x, negatives="time")
    with pytest.raises(ValueError, match="shape"):
        cpc_infonce(x, x[:, :4])
    with pytest.raises(ValueError, match="at least 2 sequences"):
        cpc_infonce(x[:1], x[:1], negatives="batch")
    with pytest.raises(ValueError, match="num_negatives"):
        cpc_infonce(x, x, num_negatives=0)
