"""Encoders and heads (pure torch, no Ray) with a name registry for the configuration.

Every encoder takes (B, in_channels, T) and offers ``forward`` -> (B, feature_dim) pooled
window features, ``forward_features`` -> (B, C, T') per-time-step features, and the attributes
``feature_dim`` and ``downsample`` (T' = ceil(T / downsample)).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ecg_ray.errors import ConfigError
from ecg_ray.models.cpc_net import CPCEncoder, cpc_4fc2lstm
from ecg_ray.models.heads import CPCClassifierHead, LinearHead, MLPHead, build_head
from ecg_ray.models.xresnet1d import (
    XResNet1d,
    xresnet1d50,
    xresnet1d50_standard,
    xresnet1d101,
    xresnet1d101_standard,
)

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    # reference widths first: they are the defaults so results compare with the paper
    "xresnet1d50": xresnet1d50,
    "xresnet1d101": xresnet1d101,
    "xresnet1d50_standard": xresnet1d50_standard,
    "xresnet1d101_standard": xresnet1d101_standard,
    "cpc_4fc2lstm": cpc_4fc2lstm,
}


def encoder_names() -> list[str]:
    """Registered encoder names, in registry order."""
    return list(ENCODERS)


def encoder_output(name: str) -> str:
    """What encoder ``name`` gives a method: "pooled" or "sequence" (built on the meta device: no memory)."""
    import torch

    with torch.device("meta"):
        return getattr(build_encoder(name), "output", "pooled")


def build_encoder(name: str, in_channels: int = 12, **kwargs) -> nn.Module:
    """Build a registered encoder; an unknown name raises ConfigError listing the valid names."""
    try:
        factory = ENCODERS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}; valid names: {', '.join(encoder_names())}") from None
    return factory(in_channels=in_channels, **kwargs)


__all__ = [
    "ENCODERS",
    "CPCClassifierHead",
    "CPCEncoder",
    "LinearHead",
    "MLPHead",
    "XResNet1d",
    "build_encoder",
    "build_head",
    "encoder_names",
    "encoder_output",
]
