"""JEPA's regression loss: the predictor's embeddings of the masked patches against the target encoder's.

Weimann & Conrad's ECG-JEPA (github.com/kweimann/ECG-JEPA, models/JEPA.py) takes the mean absolute
error (``l1``) between the predicted and the target embeddings of every masked patch; the targets
are the EMA target encoder's outputs, which end in its LayerNorm. I-JEPA (Assran et al. 2023)
normalises the targets once more with a parameter-free layer norm and takes a smooth L1; ``l2`` is
the plain mean squared error. ``layer_norm_targets`` adds that parameter-free normalisation.

Targets are detached (the target encoder moves only by its EMA). The loss is the mean over this
worker's masked patches and channels: no communication, so DDP's gradient averaging gives the
gradient of the global mean for equal local batches (every worker masks the same number of
patches per step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ecg_ray.losses._precision import as_float, autocast_off

#: ``jepa.loss`` values
JEPA_LOSSES = ("l1", "smooth_l1", "l2")


def jepa_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "l1",
              layer_norm_targets: bool = False) -> torch.Tensor:
    """Mean over (B, M, D) elements of the ``kind`` distance between ``prediction`` and detached ``target``."""
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(f"jepa_loss expects two (B, M, D) tensors of equal shape, got {tuple(prediction.shape)} "
                         f"and {tuple(target.shape)}")
    with autocast_off(prediction.device):
        p, z = as_float(prediction), as_float(target.detach())
        if layer_norm_targets:
            z = F.layer_norm(z, z.shape[-1:])
        if kind == "l1":
            return (p - z).abs().mean()
        if kind == "smooth_l1":
            return F.smooth_l1_loss(p, z)
        if kind == "l2":
            return (p - z).square().mean()
    raise ValueError(f"unknown JEPA loss {kind!r}; choose one of {', '.join(JEPA_LOSSES)}")
