"""Batched ECG augmentations that run on the batch's device with seeded per-sample randomness.

Every transform takes a float tensor ``x`` of shape (B, leads, T) and a ``torch.Generator`` and
returns a new tensor of the same shape, dtype and device (the input is never modified). Each
sample of the batch gets its own random parameters, all drawn from the generator, so a run is
reproducible from its seed: the same generator state gives the same output. Random numbers are
drawn on the generator's device and moved to the batch's device; pass a generator that lives on
the batch's device (as the trainer does) to avoid host-to-device copies of whole noise tensors.
Generators on different devices produce different streams, so results are reproducible per
device type, not across CPU and GPU.

Nothing loops over samples in Python: crops and time warps are one gather + lerp, noise models
are built from broadcast arithmetic (and one FFT for :class:`EMNoise`).

Modules, one job each: :mod:`.base` (the interface, RandomApply, Compose), :mod:`.crops`
(RandomResizedCrop, TimeOut), :mod:`.warps` (DynamicTimeWarp), :mod:`.amplitude`
(ChannelResize), :mod:`.leads` (RandomLeadMask, ECG-FM's random lead masking), :mod:`.noise` (the
additive noise models), and the helpers :mod:`.checks`
(argument validation), :mod:`.draws` (random draws) and :mod:`.interpolation` (gather + lerp).
This module holds the registry and the builder.

Configuration goes through :func:`build_augmentation`, which takes a list of specs such as
``{"name": "RandomResizedCrop", "scale": [0.5, 1.0], "p": 1.0}``; the optional ``p`` applies the
transform to each sample with that probability. :data:`PAPER_DEFAULT` is the pipeline used by
Mehari & Strodthoff (2022) for SimCLR/BYOL/SwAV: RandomResizedCrop then TimeOut (with our
uniform crop stretch; the paper's jobs ask for ``warp: reference`` explicitly).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ecg_ray.errors import ConfigError

from .amplitude import ChannelResize
from .base import Augmentation, Compose, RandomApply
from .checks import _integer as _integer
from .checks import _number
from .checks import _pair as _pair
from .crops import RandomResizedCrop, TimeOut
from .draws import _rand as _rand
from .draws import _randn as _randn
from .draws import _uniform as _uniform
from .interpolation import _resample as _resample
from .leads import RandomLeadMask
from .noise import BaselineShift, BaselineWander, EMNoise, GaussianNoise, PowerlineNoise
from .warps import DynamicTimeWarp

# The private helpers above are imported "as" themselves: they were importable from the former
# single module ecg_ray/augment.py, and the explicit re-export keeps them so.

__all__ = [
    "PAPER_DEFAULT",
    "TRANSFORMS",
    "Augmentation",
    "BaselineShift",
    "BaselineWander",
    "ChannelResize",
    "Compose",
    "DynamicTimeWarp",
    "EMNoise",
    "GaussianNoise",
    "PowerlineNoise",
    "RandomApply",
    "RandomLeadMask",
    "RandomResizedCrop",
    "TimeOut",
    "build_augmentation",
]

#: The reference pipeline for the contrastive / bootstrap methods (paper defaults for each, except
#: that RandomResizedCrop keeps our uniform stretch; see RandomResizedCrop's ``warp``).
PAPER_DEFAULT: list[dict[str, Any]] = [{"name": "RandomResizedCrop"}, {"name": "TimeOut"}]

#: transforms that can be named in a spec, by class name
TRANSFORMS: dict[str, type[Augmentation]] = {
    cls.__name__: cls
    for cls in (RandomResizedCrop, TimeOut, GaussianNoise, ChannelResize, BaselineWander, PowerlineNoise,
                EMNoise, BaselineShift, DynamicTimeWarp, RandomLeadMask)
}


def _accepted(cls: type[Augmentation]) -> list[str]:
    return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]


def build_augmentation(specs: Sequence[Mapping[str, Any]] | None, fs: float) -> Compose:
    """Build the pipeline described by ``specs`` (None: :data:`PAPER_DEFAULT`; []: identity).

    Each spec is a mapping with ``name`` (a class name from :data:`TRANSFORMS`), the optional
    per-sample probability ``p`` (default 1) and constructor arguments; lists are accepted for
    pairs. ``fs`` is the data's sampling rate and is passed to the transforms that need it; a
    spec may not set ``fs`` itself, since a rate that differs from the data's would silently put
    noise at the wrong frequencies. Problems raise :class:`ConfigError` naming the transform and
    the key.
    """
    fs = _number("augmentations", "fs", fs, 0.0, lo_open=True)
    if specs is None:
        specs = PAPER_DEFAULT
    if isinstance(specs, (Mapping, str, bytes)) or not isinstance(specs, Iterable):
        raise ConfigError(f"augmentations must be a list of {{name: ...}} mappings, got {specs!r}")
    transforms: list[Augmentation] = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            raise ConfigError(f"augmentations[{index}] must be a mapping with a 'name' key, got {spec!r}")
        spec = dict(spec)
        name = spec.pop("name", None)
        if name not in TRANSFORMS:
            raise ConfigError(f"augmentations[{index}]: unknown transform {name!r}; "
                              f"known: {', '.join(sorted(TRANSFORMS))}")
        cls = TRANSFORMS[name]
        p = spec.pop("p", 1.0)
        accepted = _accepted(cls)
        if "fs" in spec:
            raise ConfigError(f"{name}: key 'fs' cannot be set per transform; it is the data's rate ({fs:g} Hz)")
        unknown = sorted(set(spec) - set(accepted))
        if unknown:
            allowed = ", ".join(["p", *[a for a in accepted if a != "fs"]])
            raise ConfigError(f"{name}: unknown parameter {', '.join(repr(k) for k in unknown)} "
                              f"(allowed: {allowed})")
        if "fs" in accepted:
            spec["fs"] = fs
        transform = cls(**spec)
        p = _number(name, "p", p, 0.0, 1.0)
        transforms.append(transform if p >= 1.0 else RandomApply(transform, p))
    return Compose(transforms)
