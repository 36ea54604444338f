"""SimCLR's NT-Xent loss (Chen et al. 2020): the by-id contrastive loss with one positive per anchor.

``nt_xent(z1, z2)`` is :func:`ecg_ray.losses.contrastive.contrastive_loss` on ``cat(z1, z2)`` with
row ``i`` of both views sharing id ``i`` (made unique over workers); kept as the named loss that
the tests check against a hand-written reference.

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

from ecg_ray.distributed import row_offset
from ecg_ray.losses.contrastive import contrastive_loss

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
    b = z1.shape[0]
    sample = torch.arange(b, device=z1.device) + (row_offset(b, z1.device) if gather else 0)
    return contrastive_loss(torch.cat([z1, z2]), torch.cat([sample, sample]), temperature=temperature,
                            gather=gather)
