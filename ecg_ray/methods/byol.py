"""BYOL (Grill et al. 2020): online encoder+projector+predictor, EMA target, symmetric loss.

The target is an exponential moving average of EVERY online parameter and buffer (weights,
biases, BatchNorm running statistics; integer buffers are copied). The reference updated only
tensors named "weight", leaving biases and BN buffers at their initial values. The decay follows
tau = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2 over the K optimizer steps of the run.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ecg_ray.losses.byol import symmetric_byol_loss
from ecg_ray.methods.base import Method
from ecg_ray.models.heads import MLPHead


class BYOL(Method):
    name = "byol"

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        c = config.byol
        self.projector = MLPHead(encoder.feature_dim, c.hidden_dim, c.projection_dim, num_layers=2,
                                 batch_norm=True)
        self.predictor = MLPHead(c.projection_dim, c.predictor_hidden_dim, c.projection_dim, num_layers=2,
                                 batch_norm=True)
        self.target = nn.Sequential(copy.deepcopy(encoder), copy.deepcopy(self.projector))
        for p in self.target.parameters():
            p.requires_grad_(False)
        for module in self.target.modules():
            # The target normalises with batch statistics (train mode, as in BYOL) but its running
            # statistics are defined by the EMA alone, not also moved by its own forward passes.
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0
        self.tau_base = c.tau_base
        self.tau = c.tau_base

    def online(self) -> nn.Sequential:
        return nn.Sequential(self.encoder, self.projector)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(x)
        both = torch.cat([v1, v2])
        projections = self.projector(self.encoder(both))
        self.record_embedding(projections)  # solo-learn's z_std: the online projector's output
        p1, p2 = self.predictor(projections).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target(both).chunk(2)
        return {"loss": symmetric_byol_loss(p1, z2, p2, z1), "tau": torch.tensor(self.tau)}

    def tau_at(self, step: int) -> float:
        return 1.0 - (1.0 - self.tau_base) * (math.cos(math.pi * step / self.total_steps) + 1) / 2

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        super().after_optimizer_step(step)
        self.tau = self.tau_at(step)
        floats, ints = self._ema_pairs()
        # One fused lerp over all ~660 tensors (target + (1 - tau) * (online - target) = tau * target
        # + (1 - tau) * online) instead of two kernels per tensor.
        torch._foreach_lerp_(floats[0], floats[1], 1.0 - self.tau)
        for t, o in zip(*ints, strict=True):
            t.copy_(o)  # e.g. BatchNorm's num_batches_tracked

    def _ema_pairs(self) -> tuple[tuple[list, list], tuple[list, list]]:
        """(target, online) floating tensors and (target, online) integer buffers, paired in order."""
        online = self.online()
        targets = [*self.target.parameters(), *self.target.buffers()]
        sources = [*(p.detach() for p in online.parameters()), *online.buffers()]
        if len(targets) != len(sources):
            raise RuntimeError("BYOL: target and online networks no longer have the same tensors")
        floats = ([t for t in targets if t.dtype.is_floating_point], [s for t, s in zip(targets, sources, strict=True)
                                                                       if t.dtype.is_floating_point])
        ints = ([t for t in targets if not t.dtype.is_floating_point],
                [s for t, s in zip(targets, sources, strict=True) if not t.dtype.is_floating_point])
        return floats, ints
