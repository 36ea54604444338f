"""One optimizer step, its precision, optimizer and device settings: the training loop's machinery.

Torch only (no Ray, no data stack). Pretraining (``ecg_ray.train.pretrain``), downstream training
(``ecg_ray.train.downstream``: linear, fine-tuning, supervised), the step benchmarks and
``bench/gpu_check.py`` all run exactly this code, the last one on a bare GPU machine: one step
function, one optimizer builder (``optim.name``), one precision setting (``train.precision``) and one
once-per-epoch finite-loss check, so that a setting means the same thing in every kind of run.
"""

from __future__ import annotations

import contextlib
import math

import torch

from ecg_ray.config import Config
from ecg_ray.errors import ConfigError, EcgRayError


def resolve_precision(precision: str, device_type: str, bf16_supported: bool) -> str:
    """``auto`` -> bf16 on a GPU that supports it, fp16 (with a grad scaler) on an older GPU, fp32 on CPU.

    bf16 autocast on a GPU without bf16 support (before Ampere) is emulated or fails; fp16 with a
    scaler is what those GPUs run fast.
    """
    if precision != "auto":
        return precision
    if device_type != "cuda":
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def precision_context(precision: str, device: torch.device):
    """(autocast context factory, GradScaler or None) for the requested precision on this device."""
    if precision == "auto":
        precision = resolve_precision(precision, device.type,
                                      device.type == "cuda" and torch.cuda.is_bf16_supported())
    if precision == "fp32":
        return contextlib.nullcontext, None
    if precision == "bf16":
        return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), None
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a GPU; use fp32 or bf16 on CPU")
        return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")
    raise ConfigError(f"train.precision: unknown value {precision!r} (auto, fp32, bf16, fp16)")


def training_step(model, method, batch: dict[str, torch.Tensor], optimizer, scheduler, autocast, scaler,
                  global_step: int) -> torch.Tensor:
    """One optimizer step on ``batch`` (``signal`` + the fields the objective needs); returns the
    detached fp32 loss.

    ``model`` is what runs the forward pass and returns ``{"loss": ...}``: a pretraining method (or
    its DDP wrapper), or downstream's :class:`ecg_ray.train.classifier.MultiLabelObjective`.
    ``method`` gets the hooks (after_backward: e.g. freezing SwAV prototypes; after_optimizer_step:
    e.g. BYOL's EMA; the downstream objective has none).
    ``global_step`` counts this step (1-based). Shared by the Ray Train worker and the benchmarks,
    so that both time exactly the same work. A step that fp16's GradScaler skipped (inf/NaN
    gradients) runs no ``after_optimizer_step`` hook.
    """
    with autocast():
        out = model(batch)
    loss = out["loss"]
    # No finiteness check here: reading the loss back would stall the GPU every step. The epoch's
    # mean loss is checked once per epoch (check_epoch_loss).
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # hooks and clipping see true gradients
    else:
        loss.backward()
    method.after_backward()
    stepped = True
    if scaler is not None:
        # GradScaler skips the optimizer step when a gradient is inf/NaN and then lowers its scale.
        # Its step already waits for that check on the host, so reading the scale costs no extra sync.
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= scale
    else:
        optimizer.step()
    scheduler.step()
    if stepped:  # e.g. BYOL's EMA must not follow weights that did not move
        method.after_optimizer_step(global_step)
    return loss.detach().float()


class TrainingDivergedError(EcgRayError, FloatingPointError):
    """The loss went NaN or infinite: told in one line (an ecg_ray error), still a FloatingPointError."""


def check_epoch_loss(mean_loss: float, epoch: int) -> None:
    """Stop a run whose loss went NaN or infinite during ``epoch`` (checked once per epoch, on the mean)."""
    if not math.isfinite(mean_loss):
        raise TrainingDivergedError(f"the mean loss of epoch {epoch} is {mean_loss}: training diverged; "
                                    "lower optim.lr (or use train.precision=fp32)")


def configure_device(device: torch.device) -> None:
    """GPU kernels tuned for fixed shapes (every step has the same batch and crop) and TF32 matmuls."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def build_optimization(config: Config, params: torch.nn.Module | list, steps: int, epochs: int | None = None,
                       lr: float | None = None):
    """(optimizer, per-step warm-up + cosine scheduler) for ``epochs`` epochs of ``steps`` steps.

    The optimizer is ``optim.name`` (:func:`ecg_ray.optim.build_optimizer`) with optim.* settings.
    ``params``: a module, split into decay / no-decay groups (pretraining), or ready parameter
    groups, each with its own lr and weight decay (downstream's discriminative groups). ``epochs``
    defaults to train.epochs (downstream passes a phase's epochs) and ``lr`` to optim.lr (the base
    lr of a group that sets none).
    """
    from ecg_ray.optim import build_optimizer, warmup_cosine

    epochs = config.train.epochs if epochs is None else epochs
    optimizer = build_optimizer(params, name=config.optim.name, lr=config.optim.lr if lr is None else lr,
                                weight_decay=config.optim.weight_decay, betas=tuple(config.optim.betas),
                                momentum=config.optim.momentum)
    scheduler = warmup_cosine(optimizer, warmup_steps=int(round(config.optim.warmup_epochs * steps)),
                              total_steps=steps * epochs, min_lr_ratio=config.optim.min_lr_ratio,
                              schedule=config.optim.schedule)
    return optimizer, scheduler


def epoch_means(sums: torch.Tensor, steps: int, world: int) -> list[float]:
    """Per-step means of ``sums`` (summed on the device over ``steps`` steps), averaged over the ``world``
    workers: one all-reduce and one read back to the host per epoch, whatever the number of steps."""
    means = sums / max(1, steps)
    if world > 1:
        torch.distributed.all_reduce(means)
        means /= world
    return means.reshape(-1).tolist()
