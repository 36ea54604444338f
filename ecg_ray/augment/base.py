"""The transform interface (:class:`Augmentation`) and the two combinators built on it.

Every transform takes a float tensor ``x`` of shape (B, leads, T) and a ``torch.Generator`` and
returns a new tensor of the same shape, dtype and device (the input is never modified).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .checks import _number
from .draws import _rand


class Augmentation:
    """Base class: ``__call__(x, generator)`` checks the batch and calls ``_apply``."""

    def __init__(self, **params: Any):
        # kept for repr and for echoing the effective configuration into run logs
        self.params = params

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects a float tensor (batch, leads, time), got "
                             f"{getattr(x, 'shape', type(x))} {getattr(x, 'dtype', '')}")
        if x.shape[0] == 0 or x.shape[2] < 2:
            return x.clone()
        return self._apply(x, generator)

    def _apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class RandomApply(Augmentation):
    """Apply ``transform`` to each sample independently with probability ``p``.

    The transform runs on the whole batch and ``torch.where`` keeps the original for the samples
    that were not picked; indexing out the picked subset would force a device-to-host sync per
    batch on GPU. ``p == 0`` skips the transform entirely (and draws no random numbers).
    """

    def __init__(self, transform: Augmentation, p: float = 1.0):
        p = _number(type(transform).__name__, "p", p, 0.0, 1.0)
        super().__init__(transform=transform, p=p)
        self.transform = transform
        self.p = p

    def _apply(self, x, generator):
        if self.p <= 0.0:
            return x.clone()
        if self.p >= 1.0:
            return self.transform(x, generator)
        picked = _rand((x.shape[0],), generator, x.device) < self.p
        return torch.where(picked[:, None, None], self.transform(x, generator), x)


class Compose(Augmentation):
    """Apply transforms in order; an empty Compose returns a copy of its input."""

    def __init__(self, transforms: Iterable[Augmentation] = ()):
        self.transforms = list(transforms)
        super().__init__()

    def _apply(self, x, generator):
        out = x
        for transform in self.transforms:
            out = transform(out, generator)
        return out if out is not x else x.clone()

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self):
        return iter(self.transforms)

    def __repr__(self) -> str:
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"
