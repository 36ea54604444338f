"""SimCLR's NT-Xent loss (Chen et al. 2020) with negatives from the global batch of all workers.

For a global batch of ``N`` pairs there are ``2N`` projections. Anchor ``i`` has one positive
(the other view of the same sample) and ``2N - 2`` negatives (every other projection except
itself)::

    l_i = -log( exp(s_i,pos / tau) / sum_{k != i} exp(s_ik / tau) ),   s = cosine similarity

The self-similarity ``k = i`` is removed exactly by setting its logit to ``-inf``. The reference
implementation subtracted ``e`` (``exp(1)``) from the denominator instead of the self term
``exp(1 / tau)``, which leaves ``exp(2) - e`` of spurious mass in it at ``tau = 0.5``; that
defect is deliberately not reproduced.

Averaging convention: each worker returns the mean over its own ``2 B_local`` anchors, while
its negatives come from all workers. With equal local batches, the mean of the workers' losses
is exactly the single-process loss on the concatenated batch, and (see
:mod:`ecg_ray.distributed`) each worker's input gradient is ``world_size`` times the
corresponding slice of the single-process gradient, which DDP's gradient averaging turns back
into the single-process parameter gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ecg_ray.distributed import gather_with_grad, row_offset
from ecg_ray.losses._precision import as_float, autocast_off

__all__ = ["nt_xent"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5,
            gather: bool = True) -> torch.Tensor:
    """NT-Xent loss of two views ``z1``, ``z2`` of shape ``(B_local, D)`` (normalised here).

    Row ``i`` of ``z1`` and row ``i`` of ``z2`` are the positive pair. With ``gather`` (and an
    initialised process group) the candidates are the projections of all workers; without it,
    or in a single process, only this worker's ``2 B_local``. Returns a scalar: the mean over
    this worker's ``2 B_local`` anchors.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent expects two (B, D) tensors of equal shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    b = z1.shape[0]
    with autocast_off(z1.device):
        a1 = F.normalize(as_float(z1), dim=1)
        a2 = F.normalize(as_float(z2), dim=1)
        if gather:
            # Gathered with gradient: the negatives this worker contributes to other workers'
            # anchors must also send gradient back here (see ecg_ray.distributed).
            c1, c2 = gather_with_grad(a1), gather_with_grad(a2)
            offset = row_offset(b, z1.device)  # where this worker's rows sit in c1 and c2
        else:
            c1, c2, offset = a1, a2, 0
        n = c1.shape[0]
        anchors = torch.cat([a1, a2], dim=0)  # (2B, D): local anchors, view 1 then view 2
        candidates = torch.cat([c1, c2], dim=0)  # (2N, D): global, view 1 then view 2
        logits = anchors @ candidates.T / temperature  # (2B, 2N)

        local = torch.arange(b, device=z1.device) + offset
        self_index = torch.cat([local, local + n])  # column of each anchor's own projection
        positive = torch.cat([local + n, local])  # column of the other view of the same sample
        rows = torch.arange(2 * b, device=z1.device)
        # Exact removal of the self term: exp(-inf) = 0 contributes nothing to the softmax.
        # torch.full fills on the device; new_tensor(-inf) would be a blocking host-to-device copy per step.
        minus_inf = torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device)
        logits = logits.index_put((rows, self_index), minus_inf)
        return F.cross_entropy(logits, positive)

