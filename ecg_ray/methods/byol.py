"""BYOL (Grill et al. 2020): online encoder+projector+predictor, EMA target, symmetric loss.

The target is an exponential moving average of EVERY online parameter and buffer (weights,
biases, BatchNorm running statistics; integer buffers are copied), through the teacher-student
helper every momentum method shares (:mod:`ecg_ray.methods.momentum`). The reference updated only
tensors named "weight", leaving biases and BN buffers at their initial values. The decay follows
tau = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2 over the K optimizer steps of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ecg_ray.losses.byol import symmetric_byol_loss
from ecg_ray.methods.base import Batch, Method
from ecg_ray.methods.momentum import cosine_momentum, ema_update, make_teacher
from ecg_ray.models.heads import MLPHead


@dataclass
class BYOLConfig:
    hidden_dim: int = 512
    projection_dim: int = 16
    predictor_hidden_dim: int = 512
    #: EMA decay of the target network at the start; a cosine schedule takes it to 1 at the end
    tau_base: float = 0.996
    RULES: ClassVar = (("hidden_dim", ">= 1", lambda v: v >= 1),
                       ("projection_dim", ">= 1", lambda v: v >= 1),
                       ("predictor_hidden_dim", ">= 1", lambda v: v >= 1),
                       ("tau_base", "in [0, 1]", lambda v: 0 <= v <= 1))


class BYOL(Method):
    name = "byol"
    display_name = "BYOL"
    config_class = BYOLConfig

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        c = self.settings
        self.projector = MLPHead(encoder.feature_dim, c.hidden_dim, c.projection_dim, num_layers=2,
                                 batch_norm=True)
        self.predictor = MLPHead(c.projection_dim, c.predictor_hidden_dim, c.projection_dim, num_layers=2,
                                 batch_norm=True)
        self.target = make_teacher(nn.Sequential(encoder, self.projector))
        self.tau_base = c.tau_base
        self.tau = c.tau_base

    def online(self) -> nn.Sequential:
        return nn.Sequential(self.encoder, self.projector)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(batch["signal"])
        both = torch.cat([v1, v2])
        projections = self.projector(self.encoder(both))
        self.record_embedding(projections)  # solo-learn's z_std: the online projector's output
        p1, p2 = self.predictor(projections).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target(both).chunk(2)
        return {"loss": symmetric_byol_loss(p1, z2, p2, z1), "tau": torch.tensor(self.tau)}

    def tau_at(self, step: int) -> float:
        return cosine_momentum(self.tau_base, step, self.total_steps)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        super().after_optimizer_step(step)
        self.tau = self.tau_at(step)
        ema_update(self.target, self.online(), self.tau)
