"""SwAV (Caron et al. 2020): online clustering with swapped predictions on ECG crops.

Codes come from Sinkhorn-Knopp whose normalising sums run over all workers, so the
equipartition constraint holds for the global batch; nothing is tied to one device (the
reference allocated with ``.cuda()`` and ran on one GPU). Options: a per-worker queue of past
embeddings from ``queue_start_epoch``, prototypes frozen for the first epochs, multi-crop
(extra short crops that are predicted from the codes of the two full views).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ecg_ray.losses.swav import sinkhorn, swav_loss
from ecg_ray.methods.base import Batch, Method
from ecg_ray.models.heads import MLPHead


@dataclass
class SwAVConfig:
    hidden_dim: int = 2048
    projection_dim: int = 128
    prototypes: int = 3000
    temperature: float = 0.1
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes_epochs: int = 1
    #: per-worker queue of past embeddings, in multiples of the per-worker batch (0 = off)
    queue_batches: int = 0
    queue_start_epoch: int = 15
    #: multi-crop: extra small crops (samples each) beside the two full-length views
    small_crops: int = 0
    small_crop_length: int = 100
    RULES: ClassVar = (("hidden_dim", ">= 1", lambda v: v >= 1),
                       ("projection_dim", ">= 1", lambda v: v >= 1),
                       ("prototypes", ">= 1", lambda v: v >= 1),
                       ("temperature", "> 0", lambda v: v > 0),
                       ("sinkhorn_epsilon", "> 0", lambda v: v > 0),
                       ("sinkhorn_iterations", ">= 1", lambda v: v >= 1),
                       ("freeze_prototypes_epochs", ">= 0", lambda v: v >= 0),
                       ("queue_batches", ">= 0", lambda v: v >= 0),
                       ("queue_start_epoch", ">= 0", lambda v: v >= 0),
                       ("small_crops", ">= 0", lambda v: v >= 0),
                       ("small_crop_length", ">= 1 (samples)", lambda v: v >= 1))


class SwAV(Method):
    name = "swav"
    display_name = "SwAV"
    config_class = SwAVConfig

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        c = self.c = self.settings
        self.head = MLPHead(encoder.feature_dim, c.hidden_dim, c.projection_dim, num_layers=2, batch_norm=True)
        self.prototypes = nn.Linear(c.projection_dim, c.prototypes, bias=False)
        per_worker_batch = max(1, config.train.batch_size // max(1, config.train.workers))
        # The queue is a buffer so that it follows .to(device) and lands in the checkpoint.
        self.register_buffer("queue", torch.zeros(2, c.queue_batches * per_worker_batch, c.projection_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        # The same count as a Python int, so the step never reads the buffer back from the device;
        # None = to be read once from the buffer (after a checkpoint is loaded).
        self._filled: int | None = 0

    def _small_crops(self, x: torch.Tensor) -> list[torch.Tensor]:
        length = min(self.c.small_crop_length, x.shape[-1])
        crops = []
        for view in self.views(x, self.c.small_crops):
            start = int(torch.randint(0, x.shape[-1] - length + 1, (1,), generator=self.generator,
                                      device=self.generator.device if self.generator is not None else "cpu"))
            crops.append(view[..., start:start + length])
        return crops

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch["signal"]
        if self.training:
            with torch.no_grad():  # prototypes live on the unit sphere
                self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        v1, v2 = self.views(x)
        batch = x.shape[0]
        z_large = F.normalize(self.head(self.encoder(torch.cat([v1, v2]))), dim=1)
        self.record_embedding(z_large)
        embeddings = list(z_large.chunk(2))
        if self.c.small_crops:
            small = self._small_crops(x)
            embeddings += list(F.normalize(self.head(self.encoder(torch.cat(small))), dim=1).chunk(len(small)))
        # Evaluation (held-out loss) must not change training state: normalise without writing back.
        prototypes = self.prototypes.weight if self.training else F.normalize(self.prototypes.weight, dim=1)
        scores = [z @ prototypes.t() for z in embeddings]

        assignments = {}
        use_queue = self.queue.shape[1] > 0 and self.epoch >= self.c.queue_start_epoch
        queue_full = use_queue and self._queue_count() >= self.queue.shape[1]
        with torch.no_grad():
            for crop in (0, 1):
                logits = scores[crop].detach()
                if queue_full:
                    logits = torch.cat([self.queue[crop] @ prototypes.t(), logits])
                q = sinkhorn(logits, epsilon=self.c.sinkhorn_epsilon, iterations=self.c.sinkhorn_iterations)
                assignments[crop] = q[-batch:]
            if use_queue and self.training:  # validation batches never enter the queue
                self.queue[:, batch:] = self.queue[:, :-batch].clone()
                self.queue[0, :batch] = embeddings[0].detach()
                self.queue[1, :batch] = embeddings[1].detach()
                self.queue_filled.add_(batch)
                self._filled = self._queue_count() + batch
        loss = swav_loss(scores, assignments, temperature=self.c.temperature)
        return {"loss": loss}

    def uniform_loss(self, batch_per_worker: int, world: int) -> float:
        # Equal scores give a uniform softmax over the K prototypes: cross-entropy ln K whatever the codes.
        return math.log(self.c.prototypes)

    def _queue_count(self) -> int:
        if self._filled is None:  # once after a checkpoint was loaded: one read of the buffer
            self._filled = int(self.queue_filled)
        return self._filled

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._filled = None  # the loaded buffer holds the count now

    def after_backward(self) -> None:
        if self.epoch < self.c.freeze_prototypes_epochs and self.prototypes.weight.grad is not None:
            self.prototypes.weight.grad = None  # frozen prototypes stabilise the first epoch
