"""Self-supervised methods, one module each, registered by name."""

from __future__ import annotations

from ecg_ray.errors import ConfigError
from ecg_ray.methods.base import Method
from ecg_ray.methods.byol import BYOL
from ecg_ray.methods.cpc import CPC
from ecg_ray.methods.simclr import SimCLR
from ecg_ray.methods.swav import SwAV

METHODS: dict[str, type[Method]] = {"simclr": SimCLR, "byol": BYOL, "swav": SwAV, "cpc": CPC}


def build_method(config, fs: float) -> Method:
    """Encoder from ``config.model`` wrapped by the method named in ``config.method.name``."""
    from ecg_ray.models import build_encoder

    name = config.method.name
    if name not in METHODS:
        raise ConfigError(f"method.name: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](config, build_encoder(config.model.encoder), fs)


__all__ = ["METHODS", "Method", "build_method"]
