"""Run loss arithmetic in float32 even inside a mixed-precision (autocast) training step.

Similarity logits divided by small temperatures (0.1, 0.5) and exponentials in softmax and
Sinkhorn lose too much in float16, and autocast would recast float32 inputs of ``mm``/``bmm``
back to float16. The losses therefore disable autocast locally and upcast their inputs.
"""

from __future__ import annotations

import contextlib

import torch


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that disables autocast on ``device`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def as_float(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least float32 (float64 stays float64), keeping the autograd graph."""
    return t.to(torch.promote_types(t.dtype, torch.float32))
