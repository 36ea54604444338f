"""The collapse statistic every method records on its training embeddings (judged in ``ecg_ray.train.collapse``).

Here, beside the methods, because they compute it inside ``forward``; the verdict on a run lives
with the training code, which reads the figure once per epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def embedding_std(z):
    """Mean over dimensions of the std over rows of the L2-normalised rows of ``z`` (0-d tensor, no grad).

    ``z`` is (rows, d), or (..., d) whose leading axes are flattened into rows (CPC's per-step
    latents). Runs on ``z``'s device and returns a device tensor: the caller decides when to read it.
    """
    with torch.no_grad():
        rows = z.detach().reshape(-1, z.shape[-1]).float()
        return F.normalize(rows, dim=1).std(dim=0).mean()
