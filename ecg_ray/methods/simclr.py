"""SimCLR (Chen et al. 2020) on ECG: two augmented views, projection MLP, NT-Xent.

The loss is the by-id contrastive loss (``ecg_ray.losses.contrastive``) with the two views of a
sample sharing an id: NT-Xent. Negatives are gathered from every worker, so the effective batch
is the global batch whatever the number of workers; the self-similarity is masked exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_ray.distributed import row_offset
from ecg_ray.losses.contrastive import contrastive_loss
from ecg_ray.methods.base import Batch, Method
from ecg_ray.models.heads import MLPHead


@dataclass
class SimCLRConfig:
    hidden_dim: int = 512
    projection_dim: int = 16
    temperature: float = 0.5
    RULES: ClassVar = (("hidden_dim", ">= 1", lambda v: v >= 1),
                       ("projection_dim", ">= 1", lambda v: v >= 1),
                       ("temperature", "> 0", lambda v: v > 0))


class SimCLR(Method):
    name = "simclr"
    display_name = "SimCLR"
    config_class = SimCLRConfig

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        c = self.settings
        # The reference head: Linear -> ReLU -> Linear, no batch norm.
        self.projector = MLPHead(encoder.feature_dim, c.hidden_dim, c.projection_dim, num_layers=2,
                                 batch_norm=False)
        self.temperature = c.temperature

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch["signal"]
        v1, v2 = self.views(x)
        # One encoder pass over both views: half the kernel launches, same result up to BN batch stats.
        z = self.projector(self.encoder(torch.cat([v1, v2])))
        self.record_embedding(z)
        # Sample ids unique over the global batch: the two views of a sample are each other's positive.
        sample = torch.arange(x.shape[0], device=x.device) + row_offset(x.shape[0], x.device)
        return {"loss": contrastive_loss(z, torch.cat([sample, sample]), temperature=self.temperature, gather=True)}

    def uniform_loss(self, batch_per_worker: int, world: int) -> float:
        # Each anchor's softmax runs over the 2N - 1 other projections of the global batch of N pairs.
        return math.log(2 * batch_per_worker * world - 1)
