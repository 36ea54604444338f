"""Contrastive loss with positives given by id: rows with the same id attract, all others repel.

One implementation for every InfoNCE-style method (solo-learn's ``simclr_loss_func(z, indexes)``):

- SimCLR: the two views of a sample share an id (NT-Xent, Chen et al. 2020);
- CLOCS (Kiyasseh et al. 2021): segments or leads of one record (``record_index``), or records of
  one patient (``patient_index``), share an id;
- supervised contrastive: rows of one class share an id.

For anchor ``i`` with positives ``P(i)`` (rows with its id, itself excluded) among the candidates
``K(i)`` (every row of the global batch but itself)::

    l_i = -log( sum_{p in P(i)} exp(s_ip / tau) / sum_{k in K(i)} exp(s_ik / tau) ),   s = cosine similarity

With one positive per anchor this is NT-Xent exactly. The self-similarity is removed exactly
(its logit is ``-inf``; the reference SimCLR code subtracted ``e`` from the denominator instead, a
defect not reproduced). An anchor without a positive in the global batch (a patient seen once)
has no loss term and is left out of the mean.

Candidates come from every worker (``gather=True``): projections are gathered with gradient, ids
without. Each worker returns the mean over its own anchors that have a positive; with equal
numbers of such anchors on every worker, the mean of the workers' losses is the single-process
loss on the concatenated batch and DDP's gradient averaging gives the single-process gradient
(:mod:`ecg_ray.distributed`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ecg_ray.distributed import all_gather_no_grad, gather_with_grad, row_offset
from ecg_ray.losses._precision import as_float, autocast_off

__all__ = ["contrastive_loss"]


def contrastive_loss(z: torch.Tensor, ids: torch.Tensor, temperature: float = 0.5,
                     gather: bool = True) -> torch.Tensor:
    """Mean contrastive loss of this worker's rows ``z`` (n, D) (normalised here) with integer ``ids`` (n,)."""
    if z.ndim != 2 or ids.shape != (z.shape[0],):
        raise ValueError(f"contrastive_loss expects z (n, D) and ids (n,), got {tuple(z.shape)} and "
                         f"{tuple(ids.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n = z.shape[0]
    with autocast_off(z.device):
        anchors = F.normalize(as_float(z), dim=1)
        ids = ids.to(device=z.device, dtype=torch.int64)
        if gather:
            # With gradient: the negatives this worker lends other workers' anchors send gradient back.
            candidates, candidate_ids = gather_with_grad(anchors), all_gather_no_grad(ids)
            offset = row_offset(n, z.device)  # where this worker's rows sit among the candidates
        else:
            candidates, candidate_ids, offset = anchors, ids, 0
        logits = anchors @ candidates.T / temperature  # (n, N)
        rows = torch.arange(n, device=z.device)
        own = rows + offset
        is_self = torch.zeros_like(logits, dtype=torch.bool).index_put_((rows, own),
                                                                       torch.ones((), dtype=torch.bool, device=z.device))
        positive = (ids[:, None] == candidate_ids[None, :]) & ~is_self
        has_positive = positive.any(dim=1)
        minus_inf = torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device)
        denominator = torch.logsumexp(torch.where(is_self, minus_inf, logits), dim=1)
        # Rows without a positive get a finite stand-in (weight 0 below): -inf would make NaN gradients.
        positive_logits = torch.where(positive, logits, minus_inf)
        positive_logits = torch.where(has_positive[:, None], positive_logits, torch.zeros_like(logits))
        numerator = torch.logsumexp(positive_logits, dim=1)
        weight = has_positive.to(logits.dtype)
        return ((denominator - numerator) * weight).sum() / weight.sum().clamp(min=1.0)
