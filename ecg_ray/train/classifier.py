"""The downstream network (encoder + head), where its weights come from, and its learning rates.

* :class:`Classifier` wraps an encoder and a head; a frozen encoder keeps its BatchNorm in eval
  mode (the linear protocol) and can be unfrozen between training phases.
* :class:`MultiLabelObjective` is the classifier's training objective in the shape the shared
  step (:func:`ecg_ray.train.step.training_step`) takes, so downstream trains through the same step
  as pretraining.
* :func:`build_classifier` loads the encoder from an exported file or a pretraining run.
* :func:`parameter_groups` gives the head ``lr`` and the encoder discriminative rates, either one
  factor on the whole encoder (``eval.discriminative_groups: encoder``) or the reference's
  ``--discriminative_lr`` rule, ``lr x factor^k`` for the k-th layer group below the head
  (``layer_groups``; the reference divided by 4 per group, i.e. factor 0.25).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ecg_ray.config import Config
from ecg_ray.errors import ConfigError

MODES = ("linear", "finetune", "supervised")
DISCRIMINATIVE_GROUPS = ("encoder", "layer_groups")
HEAD_BIAS_INITS = ("default", "prior")


class Classifier(nn.Module):
    """Encoder + head; a frozen encoder gets no gradients and stays in eval mode."""

    def __init__(self, encoder: nn.Module, head: nn.Module, freeze_encoder: bool):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.freeze_encoder = False
        self.set_encoder_trainable(not freeze_encoder)

    def set_encoder_trainable(self, trainable: bool) -> None:
        """Freeze (head-only phase, linear protocol) or unfreeze the encoder.

        Under DistributedDataParallel this must happen before the model is wrapped: DDP registers
        the parameters that require gradients when it is built and expects every one of them to
        get a gradient in each backward pass.
        """
        self.freeze_encoder = not trainable
        for p in self.encoder.parameters():
            p.requires_grad_(trainable)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # frozen BN statistics: the linear protocol
        return self

    def forward(self, x):
        return self.head(self.encoder(x))


class MultiLabelObjective:
    """Multi-label BCE of a classifier's logits, as the shared training step expects an objective.

    ``objective(batch)`` gives ``{"loss": ...}`` for a batch with ``signal`` and ``labels``, like a
    pretraining method, and it has a method's step hooks (none does anything here). ``network`` is
    the classifier or its DDP wrapper (each fine-tuning phase wraps anew, so each gets its objective).
    """

    batch_fields = ("labels",)

    def __init__(self, network: nn.Module):
        self.network = network

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.network(batch["signal"])  # under the step's autocast: train.precision
        # The loss itself in fp32 whatever the forward ran in (autocast off for it).
        with torch.autocast(logits.device.type, enabled=False):
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float())
        return {"loss": loss}

    def after_backward(self) -> None:
        """No gradient to edit between backward and step (SwAV freezes its prototypes here)."""

    def after_optimizer_step(self, global_step: int) -> None:
        """No teacher to follow the weights (BYOL updates its EMA here)."""


def pretraining_method(config: Config) -> str | None:
    """The self-supervised method behind eval.encoder / eval.pretrained (None for random init)."""
    from ecg_ray.portable.encoder_file import read_encoder_file
    from ecg_ray.train.checkpoint import latest_checkpoint, load_state

    if config.eval.encoder:
        return read_encoder_file(config.eval.encoder).get("method")
    if config.eval.pretrained:
        return load_state(latest_checkpoint(config.eval.pretrained))["config"]["method"]["name"]
    return None


def load_encoder_weights(config: Config, map_location="cpu") -> tuple[str, dict | None]:
    """(encoder name, state dict or None) from eval.encoder (exported file) or eval.pretrained (run dir)."""
    from ecg_ray.portable.encoder_file import read_encoder_file
    from ecg_ray.portable.weights import check_encoder_weights
    from ecg_ray.train.checkpoint import encoder_weights, latest_checkpoint, load_state

    if config.eval.encoder and config.eval.pretrained:
        raise ConfigError("eval.encoder and eval.pretrained are exclusive; give one")
    if config.eval.encoder:
        payload = read_encoder_file(config.eval.encoder, map_location)
        # Checked here, so that the driver's validation fails on weights that would not load in a worker.
        check_encoder_weights(payload["encoder"], payload["state_dict"], config.eval.encoder)
        return payload["encoder"], payload["state_dict"]
    if config.eval.pretrained:
        checkpoint = latest_checkpoint(config.eval.pretrained)
        state = load_state(checkpoint, map_location=map_location)
        weights = encoder_weights(state)  # the method's exported encoder (JEPA: its EMA target)
        check_encoder_weights(state["config"]["model"]["encoder"], weights, checkpoint)
        return state["config"]["model"]["encoder"], weights
    return config.model.encoder, None


def build_classifier(config: Config, n_labels: int, map_location="cpu") -> Classifier:
    from ecg_ray.models import build_encoder, build_head

    mode = config.eval.mode
    if mode not in MODES:
        raise ConfigError(f"eval.mode: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    name, weights = load_encoder_weights(config, map_location)
    if mode == "supervised" and weights is not None:
        raise ConfigError("eval.mode=supervised trains from random initialisation; drop --encoder/--pretrained")
    encoder = build_encoder(name)
    if weights is not None:
        encoder.load_state_dict(weights)
    kind = config.eval.head
    if kind == "auto":
        kind = "linear" if mode == "linear" else encoder.finetune_head  # each encoder declares its head
    head = build_head(kind, encoder.feature_dim, n_labels)
    classifier = Classifier(encoder, head, freeze_encoder=mode == "linear")
    classifier.encoder_name = name
    return classifier


def init_head_bias(model: Classifier, labels: np.ndarray) -> None:
    """Set the head's output bias to the log-odds of each label's prevalence in ``labels`` (records x labels).

    With the bias at zero every output starts at probability 0.5 while most labels are rare; until
    the bias has moved to the prior, the gradient on the weights is dominated by that gap and pushes
    them along the features' common direction, which ranks records by feature magnitude rather than
    by label. On a small training set that transient can last the whole run (measured on the PTB-XL
    sample, see bench/RESULTS.md). Prevalences are clipped to [1e-4, 1 - 1e-4] so that a label without
    training positives gets a finite bias.
    """
    last = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
    if last.bias is None or last.out_features != labels.shape[1]:
        raise ConfigError("eval.head_bias_init=prior needs a head whose last layer has a bias per label")
    prevalence = np.clip(labels.mean(0), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        last.bias.copy_(torch.from_numpy(np.log(prevalence / (1 - prevalence))).to(last.bias))


def encoder_layer_groups(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's layer groups from the head down, as it declares them (``Encoder.parameter_groups``).
    Parameters outside every group join the group nearest the head (see :func:`parameter_groups`),
    so none is left untrained."""
    return list(encoder.parameter_groups())


def parameter_groups(model: Classifier, config: Config, lr: float | None = None) -> list[dict[str, Any]]:
    """Optimizer groups: the head at ``lr`` (default optim.lr), a trainable encoder at discriminative rates.

    ``encoder`` rule: the whole encoder at lr x factor, except an encoder that declares
    ``grouped_finetuning`` (the CPC network, whose LSTM gets lr x factor and per-step layers
    lr x factor^2: the reference's CPC fine-tuning). ``layer_groups``
    rule: the k-th layer group below the head (k = 1 nearest the head) at lr x factor^k.
    Weight decay skips biases and normalisation parameters (see :func:`ecg_ray.optim.parameter_groups`).
    """
    from ecg_ray.optim import parameter_groups as decay_groups

    lr = config.optim.lr if lr is None else lr
    factor, wd = config.eval.discriminative_lr_factor, config.optim.weight_decay
    rule = config.eval.discriminative_groups
    if rule not in DISCRIMINATIVE_GROUPS:
        raise ConfigError(f"eval.discriminative_groups: unknown rule {rule!r}; choose one of "
                          f"{', '.join(DISCRIMINATIVE_GROUPS)}")
    groups = [{**g, "lr": lr} for g in decay_groups(model.head, wd)]
    if model.freeze_encoder:
        return groups
    encoder = model.encoder
    layered = rule == "layer_groups" or encoder.grouped_finetuning
    if factor == 1.0 or not layered:
        return groups + [{**g, "lr": lr * factor} for g in decay_groups(encoder, wd)]
    parts = encoder_layer_groups(encoder)
    if rule == "encoder":
        parts = parts[:2]  # CPC: LSTM x factor, per-step layers x factor^2
    seen: set[int] = set()
    for depth, module in enumerate(parts, start=1):
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        groups += [{**g, "lr": lr * factor ** depth} for g in _decay_groups_of(module, params, wd, decay_groups)]
    rest = [p for p in encoder.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups += [{**g, "lr": lr * factor} for g in _decay_groups_of(encoder, rest, wd, decay_groups)]
    return groups


def _decay_groups_of(module: nn.Module, params: list, wd: float, decay_groups) -> list[dict[str, Any]]:
    """``decay_groups(module)`` restricted to ``params`` (norm layers found through ``module``)."""
    wanted = {id(p) for p in params}
    out = []
    for group in decay_groups(module, wd):
        kept = [p for p in group["params"] if id(p) in wanted]
        if kept:
            out.append({**group, "params": kept})
    return out
