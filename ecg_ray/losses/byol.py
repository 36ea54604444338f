"""BYOL's regression loss (Grill et al. 2020): online prediction vs. target projection.

For one pair, with ``p`` the online network's prediction and ``z`` the target (EMA) network's
projection of the other view::

    l(p, z) = || p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)

``z`` is detached: the target network receives no gradient (it moves only by the EMA update,
which lives in the method, not here). The loss is the mean over the pairs of the local batch;
it needs no communication, so each worker's loss depends only on its own samples and DDP's
gradient averaging gives the single-process gradient of the global mean for equal local
batches. Values lie in [0, 4]; 0 means perfectly aligned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ecg_ray.losses._precision import as_float, autocast_off

__all__ = ["byol_loss", "symmetric_byol_loss"]


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``2 - 2 cos(p_i, z_i)``; ``p``, ``z`` are ``(B, D)``, ``z`` is detached."""
    if p.shape != z.shape or p.ndim != 2:
        raise ValueError(f"byol_loss expects two (B, D) tensors of equal shape, got {tuple(p.shape)} "
                         f"and {tuple(z.shape)}")
    with autocast_off(p.device):
        p_n = F.normalize(as_float(p), dim=1)
        z_n = F.normalize(as_float(z.detach()), dim=1)
        return (2.0 - 2.0 * (p_n * z_n).sum(dim=1)).mean()


def symmetric_byol_loss(p1: torch.Tensor, z2: torch.Tensor, p2: torch.Tensor,
                        z1: torch.Tensor) -> torch.Tensor:
    """BYOL's symmetrised loss ``l(p1, z2) + l(p2, z1)`` (the SUM, as in the paper's L + L~).

    ``p1`` is the online prediction of view 1 and ``z2`` the target projection of view 2, and
    vice versa; the range is therefore [0, 8].
    """
    return byol_loss(p1, z2) + byol_loss(p2, z1)
