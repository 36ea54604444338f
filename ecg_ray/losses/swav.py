"""SwAV (Caron et al. 2020): Sinkhorn-Knopp codes and the swapped-prediction loss, multi-worker.

**Sinkhorn convention.** For prototype scores ``S`` of shape ``(B_global, K)`` (all workers'
rows together), :func:`sinkhorn` computes ``Q = diag(u) exp(S / eps) diag(v)`` with a fixed
number of alternating normalisations, exactly as in the authors' ``distributed_sinkhorn``
(transposed: here rows are samples, columns prototypes)::

    Q <- exp(S / eps) / sum(exp(S / eps))                   total mass 1
    repeat `iterations` times:
        Q <- Q / column sums / K                            every prototype gets mass 1/K
        Q <- Q / row sums / B_global                        every sample gets mass 1/B_global
    return Q * B_global                                     rows sum to exactly 1

(computed on log Q with logsumexp, so any score range is safe; the result is the same).

So the returned codes are per-sample probability distributions over the ``K`` prototypes (rows
sum to 1 exactly), and each prototype's column sum is approximately ``B_global / K`` (exactly
so only at the Sinkhorn fixed point; 3 iterations get close). The column sums and the total
are all-reduced over workers, so each worker's rows equal the corresponding rows of the
single-process result on the concatenated scores; ``B_global`` is the all-reduced batch size,
so workers may hold different numbers of rows. The arithmetic is float32 on the scores' own
device (float64 only for float64 scores, as in the tests' references), with no device
hard-coded (the reference allocated with ``.cuda()`` and was single-GPU). Float32 suffices
because the iterations run on log Q (no exp overflow or underflow to fight), and float64 runs
at 1/64 of the float32 rate on the A10G/L4 class of GPUs.

**Loss convention.** :func:`swav_loss` follows the reference training loop: for every crop
``a`` with codes ``q_a``, the cross-entropy ``-sum_k q_a,k log softmax(s_v / tau)_k`` is
averaged over the batch and over the other crops ``v != a``, and then over the assigned crops.
It is a local mean (the codes already carry the global constraint), so the workers' mean equals
the single-process loss for equal local batches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ecg_ray.distributed import all_reduce_max, all_reduce_sum
from ecg_ray.losses._precision import as_float, autocast_off

__all__ = ["sinkhorn", "swav_loss"]


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Equipartitioned soft codes ``Q`` (``(B_local, K)``, rows sum to 1) from scores ``(B_local, K)``.

    Normalisations over samples run over all workers of the default process group (if any).
    Returned in float32 (float64 if the scores are float64); no gradient.
    """
    if scores.ndim != 2:
        raise ValueError(f"sinkhorn expects (B, K) scores, got shape {tuple(scores.shape)}")
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"sinkhorn needs epsilon > 0 and iterations >= 1, got {epsilon}, {iterations}")
    device = scores.device
    work_dtype = torch.float64 if scores.dtype == torch.float64 and device.type != "mps" else torch.float32
    out_dtype = torch.promote_types(scores.dtype, torch.float32)
    with autocast_off(device):
        # The same normalisations as the authors' code, carried out on log Q: dividing by a sum
        # becomes subtracting a logsumexp, which neither overflows nor underflows whatever the
        # score range (exp(S / eps) overflows float32 above S = 4.4 at eps = 0.05).
        log_q = scores.detach().to(work_dtype) / epsilon
        k = log_q.shape[1]
        # torch.full: no host-to-device copy (torch.tensor(...) of a Python number would block each step)
        b_global = all_reduce_sum(torch.full((), float(log_q.shape[0]), dtype=work_dtype, device=device))
        log_k, log_b = math.log(k), torch.log(b_global)
        log_q = log_q - _global_logsumexp(log_q.reshape(-1, 1)).reshape(())  # total mass 1
        for _ in range(iterations):
            # Prototype (column) masses are global: sum over every worker's samples.
            log_q = log_q - _global_logsumexp(log_q) - log_k
            # Sample (row) masses are local to each row.
            log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - log_b
        q = torch.exp(log_q + log_b)
    return q.to(out_dtype)


def _global_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """``log sum_i exp(x[i, j])`` over the rows of all workers, shape ``(1, K)``.

    Shifted by the all-reduced column maximum so that the all-reduced sum of exponentials is
    at most ``world_size * rows`` and at least 1.
    """
    local_max = x.max(dim=0, keepdim=True).values if x.shape[0] else x.new_full((1, x.shape[1]), -torch.inf)
    m = all_reduce_max(local_max)
    return m + torch.log(all_reduce_sum(torch.exp(x - m).sum(dim=0, keepdim=True)))


def swav_loss(scores: list[torch.Tensor], assignments: dict[int, torch.Tensor],
              temperature: float = 0.1) -> torch.Tensor:
    """Swapped-prediction loss.

    ``scores[v]`` is the ``(B, K)`` prototype scores of crop ``v`` (same samples in the same
    order for every crop); ``assignments[a]`` is the code ``Q`` of crop ``a`` (usually
    ``sinkhorn(scores[a])``, possibly computed with a queue). Returns
    ``mean_a mean_{v != a} mean_i [ -sum_k Q_a[i, k] log softmax(scores[v][i] / temperature)_k ]``.
    The codes are treated as constants (detached).
    """
    if len(scores) < 2:
        raise ValueError(f"swav_loss needs at least 2 crops, got {len(scores)}")
    if not assignments:
        raise ValueError("swav_loss needs at least one assigned crop")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    shape = scores[0].shape
    if scores[0].ndim != 2 or any(s.shape != shape for s in scores):
        raise ValueError(f"all crops need (B, K) scores of one shape, got {[tuple(s.shape) for s in scores]}")
    n_crops = len(scores)
    with autocast_off(scores[0].device):
        log_probs = [F.log_softmax(as_float(s) / temperature, dim=1) for s in scores]
        total = scores[0].new_zeros((), dtype=log_probs[0].dtype)
        for crop, q in assignments.items():
            if not 0 <= crop < n_crops:
                raise ValueError(f"assignment for crop {crop}, but only crops 0..{n_crops - 1} exist")
            if q.shape != shape:
                raise ValueError(f"codes of crop {crop} have shape {tuple(q.shape)}, scores {tuple(shape)}")
            q = q.detach().to(log_probs[0].dtype)
            cross = sum(-(q * log_probs[v]).sum(dim=1).mean() for v in range(n_crops) if v != crop)
            total = total + cross / (n_crops - 1)
        return total / len(assignments)
