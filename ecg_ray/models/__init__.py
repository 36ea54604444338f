"""Encoders and heads (pure torch, no Ray), encoders registered by name for the configuration.

Every encoder is an :class:`Encoder` (see :mod:`ecg_ray.models.registry` for what it declares):
it takes (B, in_channels, T) and offers ``forward`` -> (B, feature_dim) pooled window features,
``forward_features`` -> (B, C, T') per-time-step features, the attributes ``feature_dim`` and
``downsample`` (T' = ceil(T / downsample)), ``output``, and ``parameter_groups()`` for
discriminative learning rates. Adding an encoder is adding its file here with a
``@register_encoder("name")`` factory.
"""

from __future__ import annotations

# The reference-width xresnet1d encoders register first: they are the defaults, so results compare
# with the paper, and registration order is the order names are listed in.
from ecg_ray.models.xresnet1d import (  # isort: skip
    XResNet1d,
    xresnet1d50,
    xresnet1d50_standard,
    xresnet1d101,
    xresnet1d101_standard,
)
from ecg_ray.models.cpc_net import CPCEncoder, cpc_4fc2lstm  # isort: skip
from ecg_ray.models.heads import CPCClassifierHead, LinearHead, MLPHead, build_head
from ecg_ray.models.registry import (
    ENCODER_OUTPUTS,
    ENCODERS,
    Encoder,
    EncoderInfo,
    build_encoder,
    discover,
    encoder_info,
    encoder_output,
    encoders,
    register_encoder,
)

discover()  # every other encoder file of this package registers itself now


def encoder_names() -> list[str]:
    """Registered encoder names, in registration order."""
    return list(encoders())


__all__ = [
    "ENCODERS",
    "ENCODER_OUTPUTS",
    "CPCClassifierHead",
    "CPCEncoder",
    "Encoder",
    "EncoderInfo",
    "LinearHead",
    "MLPHead",
    "XResNet1d",
    "build_encoder",
    "build_head",
    "cpc_4fc2lstm",
    "encoder_info",
    "encoder_names",
    "encoder_output",
    "encoders",
    "register_encoder",
    "xresnet1d50",
    "xresnet1d50_standard",
    "xresnet1d101",
    "xresnet1d101_standard",
]
