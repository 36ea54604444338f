"""The teacher-student update every momentum method shares (BYOL's target, JEPA's, DINO's ...).

``cosine_momentum(base, step, total)`` is BYOL's schedule: tau = 1 - (1 - base) * (cos(pi k / K) + 1) / 2,
from ``base`` at step 0 to 1 at step K. :func:`make_teacher` makes a frozen copy of a student
network and :func:`ema_update` moves EVERY floating tensor of it (weights, biases, BatchNorm running statistics)
towards the student by ``tau``, copying integer buffers (``num_batches_tracked``): the reference
BYOL code updated only tensors named "weight", leaving biases and BN buffers at their initial
values. One fused ``_foreach_lerp_`` over all tensors, not two kernels per tensor. Workers stay
consistent because every worker applies the same update to identical (DDP-synchronised) students.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's tau at optimizer step ``step`` of ``total_steps``: ``base`` at 0, 1 at the end."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / max(1, total_steps)) + 1) / 2


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` to be moved by :func:`ema_update` (the method keeps it as a submodule)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    for module in teacher.modules():
        # The teacher normalises with batch statistics (train mode, as in BYOL), but its running
        # statistics are defined by the EMA alone, not also moved by its own forward passes.
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, tau: float) -> None:
    """teacher <- tau * teacher + (1 - tau) * student, tensor by tensor; integer buffers copied."""
    targets = [*teacher.parameters(), *teacher.buffers()]
    sources = [*(p.detach() for p in student.parameters()), *student.buffers()]
    if len(targets) != len(sources):
        raise RuntimeError("the EMA teacher and its student no longer have the same tensors")
    floats = [(t, s) for t, s in zip(targets, sources, strict=True) if t.dtype.is_floating_point]
    ints = [(t, s) for t, s in zip(targets, sources, strict=True) if not t.dtype.is_floating_point]
    if floats:
        torch._foreach_lerp_([t for t, _ in floats], [s for _, s in floats], 1.0 - tau)
    for t, s in ints:
        t.copy_(s)
