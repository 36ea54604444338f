"""CPC (Oord et al. 2018) in the paper's modified form: 4FC+2LSTM, predict latents 1..K ahead.

The per-step encoder maps each sample to a latent z_t, the LSTM summarises z_<=t into c_t, and
one linear predictor per step k scores W_k c_t against z_{t+k} with InfoNCE. Negatives come from
the same sequence and/or the batch (``cpc.negatives``); the loss is a mean, not a sum, and is
computed for all positions at once (the reference looped over positions in Python).
"""

from __future__ import annotations

import torch
from torch import nn

from ecg_ray.losses.cpc import cpc_infonce
from ecg_ray.methods.base import Method


class CPC(Method):
    name = "cpc"
    uses_augmentations = False

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        if not hasattr(encoder, "encode") or not hasattr(encoder, "context"):
            from ecg_ray.errors import ConfigError

            raise ConfigError(f"method cpc needs a sequence encoder (model.encoder=cpc_4fc2lstm), "
                              f"got {type(encoder).__name__}")
        c = self.c = config.cpc
        self.predictors = nn.ModuleList([nn.Linear(c.hidden_dim, c.hidden_dim) for _ in range(c.prediction_steps)])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder.encode(x)  # (B, T, C)
        context = self.encoder.context(z)
        losses = []
        for k, predictor in enumerate(self.predictors, start=1):
            if z.shape[1] <= k:
                break
            losses.append(cpc_infonce(predictor(context[:, :-k]), z[:, k:], negatives=self.c.negatives,
                                      num_negatives=self.c.num_negatives, generator=self.generator))
        return {"loss": torch.stack(losses).mean()}
