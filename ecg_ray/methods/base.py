"""The small base class every self-supervised method implements.

A method is one ``nn.Module`` whose ``forward(x)`` takes a batch of raw crops (B, 12, T),
augments it on the device, and returns a dict with the scalar ``loss`` (plus any extra
scalars to log). Keeping the loss inside ``forward`` lets DistributedDataParallel see every
parameter that takes part, so no ``find_unused_parameters`` is needed.

Hooks, all optional: ``on_train_start`` (total steps known), ``on_epoch_start``,
``after_backward`` (e.g. freeze prototypes), ``after_optimizer_step`` (e.g. BYOL's EMA), and
``extra_state`` / ``load_extra_state`` for state that is not a parameter or buffer.

Collapse monitoring (:mod:`ecg_ray.train.collapse`): ``forward`` passes the batch's embeddings
to ``record_embedding`` (kept on the device as one number), and ``uniform_loss`` gives the value
the method's loss takes when all similarities are equal (None: no such value).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ecg_ray.augment import PAPER_DEFAULT, build_augmentation
from ecg_ray.config import Config
from ecg_ray.methods.embedding_stats import embedding_std


class Method(nn.Module):
    """Encoder + method-specific heads + loss."""

    name: str = ""
    #: methods that augment their input (CPC reads raw 10 s windows)
    uses_augmentations: bool = True

    def __init__(self, config: Config, encoder: nn.Module, fs: float):
        super().__init__()
        self.config = config
        self.encoder = encoder
        specs = config.augmentations if config.augmentations is not None else PAPER_DEFAULT
        self.augment = build_augmentation(specs if self.uses_augmentations else [], fs=fs)
        self.generator: torch.Generator | None = None
        self.epoch = 0
        self.total_steps = 1
        self.step = 0
        #: collapse statistic of the last training batch (a 0-d device tensor) and the embedding width
        self.embedding_std: torch.Tensor | None = None
        self.embedding_dim: int | None = None

    def set_generator(self, generator: torch.Generator) -> None:
        """The seeded generator that draws augmentation parameters (on the batch's device)."""
        self.generator = generator

    def views(self, x: torch.Tensor, n: int = 2) -> list[torch.Tensor]:
        return [self.augment(x, self.generator) for _ in range(n)]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def record_embedding(self, z: torch.Tensor) -> None:
        """Keep the collapse statistic of a training batch's embeddings ``z`` (..., d): no host sync."""
        if self.training:  # validation batches are not the training representation
            self.embedding_std = embedding_std(z)
            self.embedding_dim = int(z.shape[-1])

    def uniform_loss(self, batch_per_worker: int, world: int) -> float | None:
        """The loss when every similarity is equal (nothing learned); None where it has no such value."""
        return None

    # ---- hooks
    def on_train_start(self, total_steps: int) -> None:
        self.total_steps = max(1, int(total_steps))

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def after_backward(self) -> None:
        pass

    def after_optimizer_step(self, step: int) -> None:
        self.step = step

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
