"""The base class every self-supervised method implements, and what a method declares.

A method is one ``nn.Module`` whose ``forward(batch)`` takes a batch dict (``signal``: raw crops
(B, 12, T), plus the fields the method asked for in ``batch_fields``), augments on the device,
and returns a dict with the scalar ``loss`` (plus any extra scalars to log). Keeping the loss
inside ``forward`` lets DistributedDataParallel see every parameter that takes part, so no
``find_unused_parameters`` is needed.

Declared as class attributes (read by the registry, :mod:`ecg_ray.methods.registry`, which every
subclass with a ``name`` joins on definition): ``name``, ``display_name``, ``config_class`` (its
config section's dataclass; ``self.settings`` is the loaded section), ``encoder_output``
(``"pooled"`` or ``"sequence"`` encoders), ``batch_fields`` and ``uses_augmentations``.

``exported_submodule`` names the submodule that export, ``--best`` and the online probe take as
the trained encoder (``encoder`` unless a method overrides it, e.g. JEPA's EMA target).

Hooks, all optional: ``on_train_start`` (total steps known), ``on_epoch_start``,
``after_backward`` (e.g. freeze prototypes), ``after_optimizer_step`` (e.g. BYOL's EMA), and
``extra_state`` / ``load_extra_state`` for state that is not a parameter or buffer.

Collapse monitoring (:mod:`ecg_ray.train.collapse`): ``forward`` passes the batch's embeddings
to ``record_embedding`` (kept on the device as one number), and ``uniform_loss`` gives the value
the method's loss takes when all similarities are equal (None: no such value).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from ecg_ray.augment import PAPER_DEFAULT, build_augmentation
from ecg_ray.methods.embedding_stats import embedding_std
from ecg_ray.methods.registry import register

#: a training batch: ``signal`` (B, 12, T) and the fields a method asked for, as tensors
Batch = dict[str, torch.Tensor]


class Method(nn.Module):
    """Encoder + method-specific heads + loss."""

    #: ``method.name``, and the key of the method's config section
    name: ClassVar[str] = ""
    #: how reports and tables name it
    display_name: ClassVar[str] = ""
    #: dataclass of the config section ``<name>:`` (None: the method has no settings); a class
    #: attribute ``RULES`` on it lists (key, rule shown, test) range checks run before Ray starts
    config_class: ClassVar[type | None] = None
    #: the encoders it accepts: "pooled" ((B, D) features) or "sequence" (``encode``/``context``)
    encoder_output: ClassVar[str] = "pooled"
    #: batch fields beside ``signal`` its step reads (ecg_ray.methods.registry.BATCH_FIELDS)
    batch_fields: ClassVar[tuple[str, ...]] = ()
    #: methods that augment their input (CPC reads raw 10 s windows)
    uses_augmentations: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):  # a subclass without a name of its own is not a method
            register(cls)

    def __init__(self, config, encoder: nn.Module, fs: float):
        # config: the root ecg_ray.config.Config (not imported: the config schema reads the method registry)
        super().__init__()
        self.config = config
        #: this method's config section (None for a method without settings)
        self.settings = config.section(self.name) if self.config_class is not None else None
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

    @classmethod
    def exported_submodule(cls, settings: dict[str, Any]) -> str:
        """The submodule holding the trained encoder: what ``ecg-ray export`` writes, ``--best`` keeps and
        the online probe measures (its state-dict prefix). ``settings``: the method's config section as
        saved in a checkpoint (a dict; empty for a method without settings). JEPA names its EMA target."""
        return "encoder"

    def exported_encoder(self) -> nn.Module:
        """The encoder :meth:`exported_submodule` names, of this method."""
        settings = dataclasses.asdict(self.settings) if self.settings is not None else {}
        return getattr(self, self.exported_submodule(settings))

    def set_generator(self, generator: torch.Generator) -> None:
        """The seeded generator that draws augmentation parameters (on the batch's device)."""
        self.generator = generator

    def views(self, x: torch.Tensor, n: int = 2) -> list[torch.Tensor]:
        return [self.augment(x, self.generator) for _ in range(n)]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
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


def synthetic_batch(signal: torch.Tensor, fields: tuple[str, ...] = (), n_labels: int = 5) -> Batch:
    """A batch for benchmarks and tests: ``signal`` plus made-up values of ``fields``.

    Rows are records ``0..B-1``; rows ``2k`` and ``2k + 1`` share a patient (so a patient-level
    method finds positives); crops start at 0; labels are all zero.
    """
    b, device = signal.shape[0], signal.device
    batch = {"signal": signal}
    made = {"record_index": lambda: torch.arange(b, device=device),
            "patient_index": lambda: torch.arange(b, device=device) // 2,
            "crop_start": lambda: torch.zeros(b, dtype=torch.int64, device=device),
            "store_index": lambda: torch.zeros(b, dtype=torch.int64, device=device),
            "labels": lambda: torch.zeros(b, n_labels, device=device)}
    for name in fields:
        batch[name] = made[name]()
    return batch
