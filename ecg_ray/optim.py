"""Optimizers and the learning-rate schedule: decay-aware parameter groups, LARS, warm-up + cosine.

* :func:`parameter_groups` splits a model's trainable parameters into a group with weight decay
  and one without (biases, normalisation layers, any 1-D parameter). Decaying BatchNorm scales
  or biases only shrinks them towards zero without regularising the function the network
  computes, and it interacts badly with LARS's trust ratio.
* :class:`LARS` is layer-wise adaptive rate scaling (You et al. 2017) with momentum.
* :func:`build_optimizer` maps a config name to an optimizer.
* :func:`warmup_cosine` is a per-optimizer-step ``LambdaLR``: linear warm-up, then cosine decay
  (or constant). The reference code's warm-up setting was silently ignored; here it is used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ecg_ray.errors import ConfigError

__all__ = ["LARS", "OPTIMIZERS", "build_optimizer", "parameter_groups", "warmup_cosine"]

#: module types whose parameters never get weight decay, whatever their shape
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


#: a parameter with this attribute (a float) trains at min(its group's lr, that value) without weight decay:
#: S4's rule for the state-space dynamics (``ecg_ray.models.s4``), which a large lr destabilises
LR_CAP = "_lr_cap"


def cap_lr(param: nn.Parameter, cap: float) -> nn.Parameter:
    """Mark ``param`` to train at most at ``cap`` (see :data:`LR_CAP`); returns it."""
    setattr(param, LR_CAP, float(cap))
    return param


def parameter_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a decay group, a no-decay group and capped groups.

    No decay (group flagged ``lars_exclude=True``, ``weight_decay=0``): every parameter of a
    normalisation layer and every parameter with at most one dimension (biases, norm scales,
    learned temperatures). Decay (``weight_decay``): the rest (conv / linear weights,
    embeddings, prototypes). Parameters marked with :func:`cap_lr` go to one group per cap
    (``name`` ``lr_cap=X``, no decay, ``lr_cap`` X: their lr is min(lr, X), set here when ``lr`` is
    given, else by :func:`build_optimizer`). Frozen parameters (``requires_grad=False``) are left
    out, shared parameters are listed once, and an empty group is dropped. ``lr``, if given, is set
    on every group.
    """
    if weight_decay < 0:
        raise ConfigError(f"optim.weight_decay must be >= 0, got {weight_decay!r}")
    seen: set[int] = set()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    capped: dict[float, list[nn.Parameter]] = {}
    for module in model.modules():
        is_norm = isinstance(module, _NORM_TYPES)
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            cap = getattr(param, LR_CAP, None)
            if cap is not None:
                capped.setdefault(float(cap), []).append(param)
            else:
                (no_decay if is_norm or param.ndim <= 1 else decay).append(param)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": float(weight_decay), "lars_exclude": False},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]
    groups += [{"name": f"lr_cap={cap:g}", "params": params, "weight_decay": 0.0, "lars_exclude": True,
                "lr_cap": cap} for cap, params in capped.items()]
    if lr is not None:
        for group in groups:
            group["lr"] = min(float(lr), group.get("lr_cap", math.inf))
    return [g for g in groups if g["params"]]


class LARS(Optimizer):
    """Layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017) with heavy-ball momentum.

    For every parameter w with gradient g in a group that is not flagged ``lars_exclude``::

        trust = eta * ||w|| / (||g|| + weight_decay * ||w||)      (1 if ||w|| or ||g|| is 0)
        v     = momentum * v + lr * trust * (g + weight_decay * w)
        w     = w - v

    Groups flagged ``lars_exclude=True`` (the no-decay group of :func:`parameter_groups`:
    biases and norm parameters, whose norms say little about a good step size) use trust 1,
    i.e. plain SGD with momentum and their own weight decay. The norms stay on the device
    (``torch.where`` instead of Python branches), so a step does not synchronise with the host,
    and every operation runs over the whole group at once (``torch._foreach_*``: a few fused
    kernels per group instead of ~8 kernel launches per parameter).
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, lars_exclude: bool = False):
        if lr <= 0:
            raise ConfigError(f"LARS: lr must be > 0, got {lr!r}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"LARS: momentum must be in [0, 1), got {momentum!r}")
        if weight_decay < 0:
            raise ConfigError(f"LARS: weight_decay must be >= 0, got {weight_decay!r}")
        if eta <= 0:
            raise ConfigError(f"LARS: eta must be > 0, got {eta!r}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta,
                    "lars_exclude": lars_exclude}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("LARS does not support sparse gradients")
            self._group_step(group, params)
        return loss

    def _group_step(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, momentum, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["eta"]
        grads = [p.grad for p in params]
        # g + wd * w as new tensors (the gradients themselves stay untouched)
        updates = torch._foreach_add(grads, params, alpha=wd) if wd != 0 else torch._foreach_mul(grads, 1.0)
        if not group["lars_exclude"]:
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            trust = torch.where((w_norm > 0) & (g_norm > 0), eta * w_norm / (g_norm + wd * w_norm),
                                torch.ones_like(w_norm))
            torch._foreach_mul_(updates, list(trust.to(updates[0].dtype).unbind()))
        if momentum == 0:
            torch._foreach_add_(params, updates, alpha=-lr)
            return
        buffers = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buffers.append(state["momentum_buffer"])
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, updates, alpha=lr)
        torch._foreach_sub_(params, buffers)


#: optimizer names accepted by :func:`build_optimizer`
OPTIMIZERS = ("adamw", "adam", "lars", "sgd")


def build_optimizer(model_or_params: nn.Module | Iterable, name: str = "adamw", lr: float = 1e-3,
                    weight_decay: float = 0.0, betas: Iterable[float] = (0.9, 0.999), momentum: float = 0.9,
                    eta: float = 0.001) -> Optimizer:
    """Return the optimizer ``name`` (adamw, adam, lars, sgd; case-insensitive).

    A module is split with :func:`parameter_groups` (no decay on biases / norm layers, LARS
    adaptation off for them); an iterable of parameters or group dicts is used as given, with
    ``weight_decay`` as the default for groups that set none. ``adam`` uses torch's coupled L2
    weight decay (what the reference's Adam runs did); ``adamw`` uses decoupled decay.
    """
    key = str(name).strip().lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"optim.name: unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(f"optim.lr must be a number > 0, got {lr!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ConfigError(f"optim.weight_decay must be a number >= 0, got {weight_decay!r}")
    betas = tuple(float(b) for b in betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {list(betas)!r}")
    if isinstance(model_or_params, nn.Module):
        params: list = parameter_groups(model_or_params, weight_decay)
    else:
        params = list(model_or_params)
    if not params:
        raise ConfigError("optim: there are no trainable parameters to optimize")
    for group in params:  # capped groups without their own lr: the cap against the optimizer's lr
        if isinstance(group, dict) and "lr_cap" in group and "lr" not in group:
            group["lr"] = min(float(lr), group["lr_cap"])
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta)


class _WarmupCosine:
    """Picklable lr factor (a callable object, so ``LambdaLR.state_dict`` saves its settings)."""

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float, schedule: str):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        self.schedule = schedule

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            # (step + 1) / (warmup + 1): the first step already moves (a zero lr would waste it)
            # and the line meets 1 exactly at step == warmup_steps
            return (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
                  schedule: str = "cosine") -> LambdaLR:
    """Per-step schedule: linear warm-up to each group's base lr, then cosine (or constant).

    With s the number of ``scheduler.step()`` calls so far (one per optimizer step), the factor
    on each group's base lr is (s + 1) / (warmup_steps + 1) for s < warmup_steps (so step 0
    runs at lr / (warmup_steps + 1)), exactly 1 at s = warmup_steps, then
    ``min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2``
    down to ``min_lr_ratio`` at s = total_steps, where it stays. ``schedule="constant"`` keeps 1
    after the warm-up. Groups keep their ratios (discriminative learning rates survive).
    A warm-up longer than the run is allowed (a short smoke run then never reaches the base lr)
    rather than an error, since it follows from a warm-up given in epochs and a small epoch count.
    """
    if schedule not in ("cosine", "constant"):
        raise ConfigError(f"optim.schedule must be 'cosine' or 'constant', got {schedule!r}")
    if isinstance(warmup_steps, bool) or int(warmup_steps) != warmup_steps or warmup_steps < 0:
        raise ConfigError(f"warm-up steps must be an integer >= 0, got {warmup_steps!r}")
    if isinstance(total_steps, bool) or int(total_steps) != total_steps or total_steps < 1:
        raise ConfigError(f"total steps must be an integer >= 1, got {total_steps!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
    factor = _WarmupCosine(int(warmup_steps), int(total_steps), float(min_lr_ratio), schedule)
    return LambdaLR(optimizer, factor)
