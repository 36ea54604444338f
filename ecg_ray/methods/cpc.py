"""CPC (Oord et al. 2018) in the paper's modified form: 4FC+2LSTM, predict latents at listed steps.

The per-step encoder maps each sample to a latent z_t, the LSTM summarises z_<=t into c_t, and
one linear predictor per listed step k scores W_k c_t against z_{t+k} with InfoNCE; the loss is
the mean over the listed steps. ``cpc.prediction_steps`` lists the steps (an integer K is short
for [1..K]) and ``cpc.predictor_bias`` gives the predictors a bias:

* the reference (Mehari & Strodthoff 2022) predicts step +12 only, with one bias-free
  projection Linear(512, 512, bias=False): ``prediction_steps: [12]``, ``predictor_bias: false``
  (jobs/pretrain/cpc.yaml);
* our default predicts steps 1..12, each with its own biased predictor (jobs/pretrain/cpc-multistep.yaml).

Predictor ``i`` (state-dict key ``predictors.i``) serves ``prediction_steps[i]``, so checkpoints
of the former ``prediction_steps: K`` load unchanged. Negatives come from the same sequence and/or
the batch (``cpc.negatives``); the loss is a mean, not a sum, and is computed for all positions at
once (the reference looped over positions in Python and summed over them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ecg_ray.errors import ConfigError
from ecg_ray.losses.cpc import NEGATIVE_MODES, cpc_infonce, expected_initial_loss
from ecg_ray.methods.base import Batch, Method


@dataclass
class CPCConfig:
    hidden_dim: int = 512
    #: steps ahead whose latents are predicted, one linear predictor each (the reference: [12]);
    #: an integer K is short for [1, ..., K]
    prediction_steps: list[int] | int = field(default_factory=lambda: list(range(1, 13)))
    #: the predictors have a bias (the reference's single projection has none)
    predictor_bias: bool = True
    negatives: str = "sequence"
    num_negatives: int = 128
    RULES: ClassVar = (("hidden_dim", ">= 1", lambda v: v >= 1),
                       ("num_negatives", ">= 1", lambda v: v >= 1),
                       ("negatives", f"one of {', '.join(NEGATIVE_MODES)}", lambda v: v in NEGATIVE_MODES))


def normalise_steps(steps) -> list[int]:
    """``cpc.prediction_steps`` as a list: an integer K means [1..K]; checked non-empty, positive, unique."""
    # bool is an int subclass: ``prediction_steps: true`` is a typo, not step 1
    if isinstance(steps, int) and not isinstance(steps, bool):
        if steps < 1:
            raise ConfigError(f"cpc.prediction_steps: an integer K means steps 1..K and must be >= 1, "
                              f"got {steps}")
        return list(range(1, steps + 1))
    if not isinstance(steps, list | tuple):
        raise ConfigError(f"cpc.prediction_steps: expected an integer K or a list of steps, "
                          f"got {steps!r}")
    if not steps:
        raise ConfigError("cpc.prediction_steps: the list of steps is empty; list at least one step, "
                          "e.g. [12]")
    bad = [k for k in steps if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad:
        raise ConfigError(f"cpc.prediction_steps: steps must be positive integers, "
                          f"got {bad} in {list(steps)}")
    repeated = sorted({k for k in steps if steps.count(k) > 1})
    if repeated:
        # a repeated step would get two predictors and double weight in the mean: almost surely a typo
        raise ConfigError(f"cpc.prediction_steps: steps must be unique, {repeated} repeated in {list(steps)}")
    return list(steps)


def _min_positions(negatives: str) -> int:
    # Sequence negatives are the other predicted positions of the same sequence: they need 2.
    return 2 if negatives in ("sequence", "both") else 1


class CPC(Method):
    name = "cpc"
    display_name = "CPC"
    config_class = CPCConfig
    encoder_output = "sequence"
    uses_augmentations = False

    def __init__(self, config, encoder, fs):
        super().__init__(config, encoder, fs)
        if getattr(encoder, "output", None) != "sequence":  # the encoder declares it (ecg_ray.models.registry)
            raise ConfigError(f"method cpc needs a sequence encoder (model.encoder=cpc_4fc2lstm), "
                              f"got {type(encoder).__name__}")
        if not getattr(encoder, "causal", True):  # a sequence encoder whose context sees later steps
            raise ConfigError(f"method cpc needs a causal context network: {type(encoder).__name__} here is "
                              f"bidirectional, so it would see the steps it predicts (use cpc_s4 to pretrain; "
                              f"the bidirectional one is for supervised training)")
        c = self.c = self.settings
        self.steps = normalise_steps(c.prediction_steps)
        # Checked here, not at the first batch: a step that no crop can reach would otherwise only
        # show up after Ray has started the workers and read the data.
        downsample = int(encoder.downsample)
        length = math.ceil(config.data.crop / downsample)
        self._check_length(length, f"data.crop={config.data.crop} samples give {length} latent steps "
                                   f"(encoder downsample {downsample})")
        self.predictors = nn.ModuleList([nn.Linear(c.hidden_dim, c.hidden_dim, bias=c.predictor_bias)
                                         for _ in self.steps])

    def _check_length(self, length: int, where: str) -> None:
        need = _min_positions(self.c.negatives)
        largest = max(self.steps)
        if length - largest < need:
            raise ConfigError(
                f"cpc.prediction_steps: step {largest} cannot be predicted: {where}, and predicting "
                f"k steps ahead with {self.c.negatives!r} negatives needs at least k + {need} steps; "
                f"lower the largest step below {length - need + 1} or raise data.crop")

    def uniform_loss(self, batch_per_worker: int, world: int) -> float:
        # InfoNCE with equal scores: ln(1 + negatives); batch negatives are this worker's other sequences.
        batch = batch_per_worker - 1 if self.c.negatives in ("batch", "both") else 0
        sequence = self.c.num_negatives if self.c.negatives in ("sequence", "both") else 0
        return expected_initial_loss(batch + sequence)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        z = self.encoder.encode(batch["signal"])  # (B, T, C)
        # Inputs shorter than data.crop would silently drop steps from the mean: refuse instead.
        self._check_length(z.shape[1], f"the input has {z.shape[1]} latent steps")
        self.record_embedding(z)  # the per-step latents, every (sequence, step) one row
        context = self.encoder.context(z)
        losses = [cpc_infonce(predictor(context[:, :-k]), z[:, k:], negatives=self.c.negatives,
                              num_negatives=self.c.num_negatives, generator=self.generator)
                  for k, predictor in zip(self.steps, self.predictors, strict=True)]
        return {"loss": torch.stack(losses).mean()}
