"""A sixth method defined outside the package: the platform test registers and trains it.

Importing this module registers ``toy`` (``Method.__init_subclass__``); a config selects it with
``method: {name: toy, module: tests.methods.toy_method}`` so that Ray workers import it too.
It asks the stream for ``record_index`` (a batch field) and is a SimCLR-like loss whose positives
are the two views of a record: enough to learn, and to show that fields reach the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ecg_ray.losses.contrastive import contrastive_loss
from ecg_ray.methods.base import Batch, Method
from ecg_ray.models.heads import MLPHead


@dataclass
class ToyConfig:
    projection_dim: int = 8
    temperature: float = 0.5
    RULES: ClassVar = (("projection_dim", ">= 1", lambda v: v >= 1), ("temperature", "> 0", lambda v: v > 0))


class Toy(Method):
    name = "toy"
    display_name = "Toy contrastive"
    config_class = ToyConfig
    batch_fields = ("record_index",)

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        self.projector = MLPHead(encoder.feature_dim, 64, self.settings.projection_dim, num_layers=2, batch_norm=False)
        #: record indices of the last batch (the test checks they arrived)
        self.last_records: torch.Tensor | None = None

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        records = batch["record_index"]
        self.last_records = records
        v1, v2 = self.views(batch["signal"])
        z = self.projector(self.encoder(torch.cat([v1, v2])))
        self.record_embedding(z)
        return {"loss": contrastive_loss(z, torch.cat([records, records]), temperature=self.settings.temperature)}
