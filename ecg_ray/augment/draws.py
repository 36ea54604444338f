"""Random draws for the transforms: made on the generator's device, returned on the batch's.

torch only accepts a generator for tensors created on the generator's own device, so every draw
goes through these helpers; the trainer passes a generator on the batch's device, which makes the
final ``.to(device)`` a no-op instead of a host-to-device copy of a whole noise tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U(0, 1) float32 on ``device``, drawn on the generator's own device (torch requires that)."""
    source = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=source).to(device)


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=source).to(device)


def _uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    return low + (high - low) * _rand(shape, generator, device)
