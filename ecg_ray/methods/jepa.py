"""ECG-JEPA (Weimann & Conrad 2024): predict the EMA target encoder's embeddings of masked patch blocks.

The context encoder (``self.encoder``, a token encoder such as ``vit1d_xs``) reads only the kept
patches of each crop; the target encoder, an EMA copy of it (:mod:`ecg_ray.methods.momentum`),
reads every patch; a narrow transformer predictor takes the context embeddings (with their
positions) plus one mask token per masked patch (with its position) and predicts the target's
embedding of each masked patch. The masks are ECG-JEPA's multi-block masks over time
(:mod:`ecg_ray.methods.jepa_masks`), the loss the mean absolute error (:mod:`ecg_ray.losses.jepa`).
No augmentations: the masking is the only corruption, as in the paper.

Following github.com/kweimann/ECG-JEPA (configs/pretrain/ViT*_all.yaml, models/predictor.py):
predictor width 96 for ViT-XS (192 for ViT-S), depth 8, 4 (6) heads, no biases; keep ratio
U(0.15, 0.25), blocks >= 10 patches; EMA momentum linear from 0.998 to 0.9995 over the run.

Workers stay consistent: every worker applies the same EMA update (same step, same momentum) to
its DDP-synchronised context encoder, so the targets are identical everywhere; the masks' shapes
(kept count, block count) are drawn from a generator seeded by the run's seed and step, so every
worker masks the same number of patches each step.

``ecg-ray export``, ``--best`` and the online probe take the TARGET encoder (``jepa.export: target``,
as I-JEPA and ECG-JEPA evaluate it); ``jepa.export: context`` takes the context encoder instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ecg_ray.errors import ConfigError
from ecg_ray.losses.jepa import JEPA_LOSSES, jepa_loss
from ecg_ray.methods.base import Batch, Method
from ecg_ray.methods.jepa_masks import BlockMasks, sample_block_masks
from ecg_ray.methods.momentum import cosine_momentum, ema_update, make_teacher
from ecg_ray.models.vit1d import Block, gather_tokens, init_transformer, sincos_positions

MOMENTUM_SCHEDULES = ("linear", "cosine")
EXPORTS = ("target", "context")


@dataclass
class JEPAConfig:
    #: the predictor's width, depth and heads (ECG-JEPA's ViT-XS: 96, 8, 4; ViT-S: 192, 8, 6)
    predictor_dim: int = 96
    predictor_depth: int = 8
    predictor_heads: int = 4
    #: fraction of patches the context encoder sees, drawn per step from U(min_keep, max_keep)
    min_keep: float = 0.15
    max_keep: float = 0.25
    #: the shortest masked block, in patches (10 x 50 ms = 0.5 s)
    min_block: int = 10
    #: distance between predicted and target embeddings: l1 (ECG-JEPA), smooth_l1 (I-JEPA), l2
    loss: str = "l1"
    #: normalise the targets once more with a parameter-free layer norm (I-JEPA); the target
    #: encoder's own output already ends in a LayerNorm
    layer_norm_targets: bool = False
    #: EMA momentum of the target encoder at the first and the last step
    momentum: float = 0.998
    final_momentum: float = 0.9995
    #: how it moves between them: linear (ECG-JEPA) or cosine (BYOL's schedule)
    momentum_schedule: str = "linear"
    #: the encoder that export, --best and the online probe take: the EMA target or the context encoder
    export: str = "target"
    RULES: ClassVar = (("predictor_dim", ">= 2 and even (sin-cos positions)", lambda v: v >= 2 and v % 2 == 0),
                       ("predictor_depth", ">= 1", lambda v: v >= 1),
                       ("predictor_heads", ">= 1", lambda v: v >= 1),
                       ("min_keep", "in (0, 1)", lambda v: 0 < v < 1),
                       ("max_keep", "in (0, 1)", lambda v: 0 < v < 1),
                       ("min_block", ">= 1 (patches)", lambda v: v >= 1),
                       ("loss", f"one of {', '.join(JEPA_LOSSES)}", lambda v: v in JEPA_LOSSES),
                       ("momentum", "in [0, 1]", lambda v: 0 <= v <= 1),
                       ("final_momentum", "in [0, 1]", lambda v: 0 <= v <= 1),
                       ("momentum_schedule", f"one of {', '.join(MOMENTUM_SCHEDULES)}",
                        lambda v: v in MOMENTUM_SCHEDULES),
                       ("export", f"one of {', '.join(EXPORTS)}", lambda v: v in EXPORTS))


class Predictor(nn.Module):
    """Narrow transformer: context embeddings + positioned mask tokens -> predicted embeddings of the masked patches."""

    def __init__(self, dim: int, predictor_dim: int, depth: int, heads: int):
        super().__init__()
        self.embed = nn.Linear(dim, predictor_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.blocks = nn.ModuleList([Block(predictor_dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(predictor_dim, eps=1e-6, bias=False)
        self.proj = nn.Linear(predictor_dim, dim, bias=False)
        self.predictor_dim = predictor_dim
        init_transformer(self, depth)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: Tensor, masks: BlockMasks, num_patches: int) -> Tensor:
        """(B, K, dim) context embeddings -> (B, M, dim) predictions for ``masks.target``'s patches."""
        x = self.embed(context)
        positions = sincos_positions(num_patches, self.predictor_dim, x.device, x.dtype)
        queries = self.mask_token.to(x.dtype) + positions[masks.target]
        h = torch.cat([x + positions[masks.context], queries], dim=1)
        for block in self.blocks:
            h = block(h)
        return self.proj(self.norm(h[:, -masks.target.shape[1]:]))


class JEPA(Method):
    name = "jepa"
    display_name = "ECG-JEPA"
    config_class = JEPAConfig
    uses_augmentations = False

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        c = self.c = self.settings
        if not callable(getattr(encoder, "tokens", None)):
            raise ConfigError(f"method jepa needs a patch-token encoder (model.encoder=vit1d_xs or vit1d_s), "
                              f"got {type(encoder).__name__}")
        if c.min_keep > c.max_keep:
            raise ConfigError(f"jepa.min_keep={c.min_keep} is above jepa.max_keep={c.max_keep}")
        if c.predictor_dim % c.predictor_heads:
            raise ConfigError(f"jepa.predictor_dim={c.predictor_dim} is not divisible by "
                              f"jepa.predictor_heads={c.predictor_heads}")
        patches = encoder.num_patches(config.data.crop)
        if patches < 2:  # checked before Ray starts (the driver builds the method on the meta device)
            raise ConfigError(f"data.crop={config.data.crop} gives {patches} patch(es) of {encoder.downsample} "
                              "samples; JEPA needs at least 2 (one seen, one predicted)")
        self.predictor = Predictor(encoder.feature_dim, c.predictor_dim, c.predictor_depth, c.predictor_heads)
        self.target_encoder = make_teacher(encoder)
        self.momentum = c.momentum

    @classmethod
    def exported_submodule(cls, settings: dict) -> str:
        return "target_encoder" if settings.get("export", "target") == "target" else "encoder"

    def momentum_at(self, step: int) -> float:
        """EMA momentum after optimizer step ``step``: from jepa.momentum to jepa.final_momentum over the run."""
        c = self.c
        if c.momentum_schedule == "linear":
            progress = min(1.0, step / self.total_steps)
        else:  # BYOL's cosine ramp; cosine_momentum(0, ...) is the fraction of the way from base to 1
            progress = cosine_momentum(0.0, min(step, self.total_steps), self.total_steps)
        return c.momentum + (c.final_momentum - c.momentum) * progress

    def masks(self, batch: int, num_patches: int, device: torch.device) -> BlockMasks:
        # The counts (kept patches, blocks) from a CPU generator seeded by seed and step: the same on
        # every worker, without reading a number back from the device; the placement per row from
        # the method's device generator (seeded per worker and epoch by the training loop).
        counts = torch.Generator().manual_seed(self.config.seed * 1_000_003 + 2 * self.step + (not self.training))
        c = self.c
        return sample_block_masks(batch, num_patches, min_keep=c.min_keep, max_keep=c.max_keep,
                                  min_block=c.min_block, scalar_generator=counts, generator=self.generator,
                                  device=device)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        x = batch["signal"]
        num_patches = self.encoder.num_patches(x.shape[-1])
        masks = self.masks(x.shape[0], num_patches, x.device)
        with torch.no_grad():
            target = gather_tokens(self.target_encoder.tokens(x), masks.target)
        context = self.encoder.tokens(x, keep=masks.context)
        self.record_embedding(context)  # every (crop, kept patch) one row
        prediction = self.predictor(context, masks, num_patches)
        loss = jepa_loss(prediction, target, self.c.loss, self.c.layer_norm_targets)
        return {"loss": loss, "momentum": torch.tensor(self.momentum)}

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        super().after_optimizer_step(step)
        self.momentum = self.momentum_at(step)
        ema_update(self.target_encoder, self.encoder, self.momentum)
