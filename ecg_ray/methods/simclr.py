"""SimCLR (Chen et al. 2020) on ECG: two augmented views, projection MLP, NT-Xent.

Negatives are gathered from every worker (``nt_xent(..., gather=True)``), so the effective
batch is the global batch whatever the number of workers; the self-similarity is masked exactly.
"""

from __future__ import annotations

import math

import torch

from ecg_ray.losses.ntxent import nt_xent
from ecg_ray.methods.base import Method
from ecg_ray.models.heads import MLPHead


class SimCLR(Method):
    name = "simclr"

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        c = config.simclr
        # The reference head: Linear -> ReLU -> Linear, no batch norm.
        self.projector = MLPHead(encoder.feature_dim, c.hidden_dim, c.projection_dim, num_layers=2,
                                 batch_norm=False)
        self.temperature = c.temperature

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(x)
        # One encoder pass over both views: half the kernel launches, same result up to BN batch stats.
        z = self.projector(self.encoder(torch.cat([v1, v2])))
        self.record_embedding(z)
        z1, z2 = z.chunk(2)
        return {"loss": nt_xent(z1, z2, temperature=self.temperature, gather=True)}

    def uniform_loss(self, batch_per_worker: int, world: int) -> float:
        # Each anchor's softmax runs over the 2N - 1 other projections of the global batch of N pairs.
        return math.log(2 * batch_per_worker * world - 1)
