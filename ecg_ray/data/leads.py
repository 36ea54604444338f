"""Lead subsets (``data.leads``): which leads an evaluation keeps, and the one helper that zeroes the rest.

A model is measured on a reduced lead set (a single-lead patch, a 3-lead Holter, a 6-lead limb
recorder) by zeroing the leads that are not listed: the input keeps its 12 channels in
:data:`~ecg_ray.data.signal.CANONICAL_LEADS` order, so the same encoder and head run unchanged,
and a missing lead reads as zero, which is what an encoder trained with ``RandomLeadMask`` saw.

Names are matched as ``prepare`` matches them (:func:`~ecg_ray.data.signal.canonical_lead_name`:
case-insensitive, ``avr``/``aVR``, ``DI`` for ``I``...); a subset is kept in canonical order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ecg_ray.errors import ConfigError


def lead_subset(names: Sequence[str] | None, key: str = "data.leads") -> tuple[str, ...] | None:
    """The canonical names of ``names`` in canonical order (None stays None = every lead).

    Raises ConfigError naming ``key`` for an empty list, an unknown name or a lead given twice.
    """
    from ecg_ray.data.signal import CANONICAL_LEADS, canonical_lead_name

    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise ConfigError(f"{key} must be a list of lead names (e.g. [I, II, V1]), got {names!r}")
    if len(names) == 0:
        raise ConfigError(f"{key} is empty: list at least one lead (null = all 12)")
    canonical = [canonical_lead_name(name) if isinstance(name, str) else None for name in names]
    unknown = [name for name, c in zip(names, canonical, strict=True) if c is None]
    if unknown:
        raise ConfigError(f"{key}: unknown lead name(s) {', '.join(map(repr, unknown))}; "
                          f"the 12 leads are {', '.join(CANONICAL_LEADS)}")
    twice = sorted({c for c in canonical if canonical.count(c) > 1}, key=CANONICAL_LEADS.index)
    if twice:
        raise ConfigError(f"{key}: lead(s) {', '.join(twice)} listed more than once (in {list(names)})")
    return tuple(lead for lead in CANONICAL_LEADS if lead in canonical)


def kept_leads(names: Sequence[str] | None) -> np.ndarray | None:
    """(12,) bool, True for the leads of ``names`` (None: None, nothing to zero)."""
    from ecg_ray.data.signal import CANONICAL_LEADS

    subset = lead_subset(names)
    if subset is None:
        return None
    return np.array([lead in subset for lead in CANONICAL_LEADS])


def lead_set_text(names: Sequence[str] | None) -> str:
    """``I,II,V1`` for a subset, ``all 12`` for None (or all twelve listed)."""
    subset = lead_subset(names)
    return "all 12" if subset is None or len(subset) == 12 else ",".join(subset)


def zero_missing_leads(x: Any, kept: np.ndarray | Any) -> Any:
    """A copy of the batch ``x`` (B, 12, T) with every lead not in ``kept`` (12,) bool set to exactly 0.

    ``x`` is a numpy array or a torch tensor (any device); the kept leads are returned bit for bit
    (``where``, not a product: a product would turn NaN into NaN and -x into -0.0). The input is
    not modified.
    """
    if isinstance(x, np.ndarray):
        kept = np.asarray(kept, dtype=bool)
        _check_shape(x.shape, len(kept))
        return np.where(kept[None, :, None], x, np.zeros((), dtype=x.dtype))
    import torch

    kept = torch.as_tensor(kept, dtype=torch.bool, device=x.device)
    _check_shape(tuple(x.shape), len(kept))
    return torch.where(kept[None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def _check_shape(shape: tuple[int, ...], leads: int) -> None:
    if len(shape) != 3 or shape[1] != leads:
        raise ValueError(f"expected a batch (B, {leads}, T), got shape {shape}")
