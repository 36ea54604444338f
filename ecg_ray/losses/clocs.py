"""The CLOCS loss (Kiyasseh et al., ICML 2021): cross-view InfoNCE over every pair of views, positives by id.

CLOCS compares views only ACROSS views: for views A and B of a batch, the similarity matrix
``S_ij = cos(v_i^A, v_j^B) / tau`` (tau = 0.1) has the rows of view A as anchors and the rows of
view B as candidates; the candidates of anchor ``i`` sharing its id (the patient in the paper,
itself among them: the diagonal of S, the paper's Eq. 2, the others its Eq. 3) are positives::

    h^{A,B}_ik = -log( exp(S_ik) / sum_j exp(S_ij) )

averaged over the positives ``k`` of each anchor, over the anchors, over both directions (A->B and
B->A) and over every pair of views (CMSC: 2 segments, 1 pair; CMLC: L leads, L(L-1)/2 pairs;
CMSMLC: 2L views). Unlike ``ecg_ray.losses.contrastive.contrastive_loss`` (NT-Xent's candidate
set: every other row of every view), a view's own rows are not candidates, and each positive is
its own term (SupCon's L_out) instead of one summed numerator. Both are selectable in the CLOCS
methods (``loss: clocs | ntxent``).

Departures from the authors' code (danikiyasseh/CLOCS, ``prepare_miscellaneous.obtain_contrastive_loss``),
which follow the paper's equations instead:

- their loop assigns ``loss = ...`` per view pair, so only the LAST pair's terms survive (then
  divided by the number of pairs); here every pair counts;
- their off-diagonal positives are counted for one anchor of each same-patient pair only (upper
  triangle by rows, lower triangle by columns: "technically need to add 1 more term for
  symmetry"), and diagonal and off-diagonal terms are two separate means; here every anchor
  averages over all its positives, so the loss is a mean over anchors. With unique ids (one
  positive per anchor) both give the same value: ``(loss_diag1 + loss_diag2) / 2`` per pair.

Every anchor has a positive (itself in the other view), so each worker's loss is a mean over the
same number of anchors: the mean of the workers' losses is the single-process loss on the
concatenated batch, and DDP's gradient averaging gives its gradient (``ecg_ray.distributed``).
Candidates are gathered with gradient, ids without.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ecg_ray.distributed import all_gather_no_grad, gather_with_grad
from ecg_ray.losses._precision import as_float, autocast_off

__all__ = ["clocs_loss", "clocs_uniform_loss"]


def clocs_loss(views: torch.Tensor, ids: torch.Tensor, temperature: float = 0.1, gather: bool = True) -> torch.Tensor:
    """Mean CLOCS loss of this worker's rows: ``views`` (n, V, D) embeddings (normalised here), ``ids`` (n,).

    ``views[i, a]`` is view ``a`` of row ``i``; rows with equal ``ids`` are positives across views.
    Memory: V^2 x n x N logits (N = rows over all workers).
    """
    if views.ndim != 3 or ids.shape != (views.shape[0],):
        raise ValueError(f"clocs_loss expects views (n, V, D) and ids (n,), got {tuple(views.shape)} and "
                         f"{tuple(ids.shape)}")
    n, n_views, dim = views.shape
    if n_views < 2:
        raise ValueError(f"clocs_loss needs at least 2 views per row, got {n_views}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    with autocast_off(views.device):
        anchors = F.normalize(as_float(views), dim=-1)
        ids = ids.to(device=views.device, dtype=torch.int64)
        if gather:
            # Gathered flat (n, V*D) so that rank order keeps each row's views together.
            candidates = gather_with_grad(anchors.reshape(n, n_views * dim)).reshape(-1, n_views, dim)
            candidate_ids = all_gather_no_grad(ids)
        else:
            candidates, candidate_ids = anchors, ids
        # logits[a, b, i, j]: anchor i in view a against candidate j in view b
        logits = torch.einsum("iad,jbd->abij", anchors, candidates) / temperature
        log_prob = logits.log_softmax(dim=-1)
        positive = (ids[:, None] == candidate_ids[None, :]).to(log_prob.dtype)  # (n, N); never an empty row
        per_anchor = -(log_prob * positive).sum(dim=-1) / positive.sum(dim=-1)  # (V, V, n)
        other_view = ~torch.eye(n_views, dtype=torch.bool, device=views.device)
        return per_anchor[other_view].mean()


def clocs_uniform_loss(batch_per_worker: int, world: int) -> float:
    """The CLOCS loss when every similarity is equal: each softmax is uniform over one view's global rows."""
    return math.log(batch_per_worker * world)
