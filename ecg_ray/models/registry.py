"""The encoder registry: an encoder is registered by name with the ``@register_encoder`` decorator.

An encoder is the unit of extension on the model side, as a method is on the training side
(:mod:`ecg_ray.methods.registry`): its file declares everything the rest of the package needs,
on its :class:`Encoder` subclass, and nothing else lists encoders or checks their names.

- ``output`` (class attribute): what it gives a method, ``"pooled"`` ((B, feature_dim) window
  features from ``forward``, e.g. xresnet1d) or ``"sequence"`` (also ``encode`` (B, T, C) latents
  per time step and ``context`` over them, e.g. the CPC network); a method's ``encoder_output``
  must match it.
- ``feature_dim`` and ``downsample`` (set in ``__init__``, they depend on the width): the width of
  ``forward``'s features (the downstream head's input) and the time reduction of
  ``forward_features`` (T' = ceil(T / downsample)).
- ``parameter_groups()``: its layer groups from the head down, which discriminative learning
  rates scale by ``factor ** k`` for the k-th group (``eval.discriminative_groups: layer_groups``).
- ``grouped_finetuning`` (class attribute): whether the plain ``encoder`` rule also splits it into
  its two groups nearest the head (the reference's CPC fine-tuning: LSTM x factor, per-step layers
  x factor^2) instead of one rate for the whole encoder.
- ``finetune_head`` (class attribute): the downstream head ``eval.head: auto`` gives it when
  fine-tuning or training supervised ("linear" or "mlp"); linear evaluation always uses "linear".

``@register_encoder("name")`` goes on a factory ``f(in_channels=12, **kwargs) -> Encoder`` (or on
the class itself). Adding an encoder is adding its file under ``ecg_ray/models/`` (imported by
:func:`discover`); an encoder defined outside the package registers when its module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from torch import nn

from ecg_ray.discovery import import_submodules
from ecg_ray.errors import CheckpointError, ConfigError

ENCODER_OUTPUTS = ("pooled", "sequence")
FINETUNE_HEADS = ("linear", "mlp")


#: the implementation behind :meth:`Encoder.embed`, registered by ``ecg_ray.portable`` when it is imported
#: (it is whenever an encoder has an ``input_spec``: InputSpec is defined there); the models stay below it
_SIGNAL_EMBEDDER: list[Callable[..., Any]] = []


def register_signal_embedder(function: Callable[..., Any]) -> None:
    """Set what :meth:`Encoder.embed` runs: ``function(encoder, signal, fs=..., leads=..., pool=..., ...)``."""
    _SIGNAL_EMBEDDER[:] = [function]


class Encoder(nn.Module):
    """Base class of every registered encoder: (B, in_channels, T) -> (B, feature_dim) from ``forward``.

    Subclasses set ``feature_dim`` and ``downsample`` in ``__init__`` and override the class
    attributes below where the defaults do not fit. The base adds no parameters and no buffers,
    so it leaves an encoder's state-dict keys (and its checkpoints) as they were.
    """

    #: "pooled": (B, feature_dim) from forward; "sequence": also encode (B, T, C) and context
    output: ClassVar[str] = "pooled"
    #: the ``encoder`` discriminative rule splits this encoder into its two groups nearest the head
    grouped_finetuning: ClassVar[bool] = False
    #: the head of ``eval.head: auto`` for fine-tuning and supervised training
    finetune_head: ClassVar[str] = "linear"
    #: whether forward takes inputs of any length (``data.window: 0`` scores whole records; False refuses it)
    accepts_any_length: ClassVar[bool] = True

    feature_dim: int
    downsample: int
    #: what the encoder was trained on (rate, leads, windows): set by ``ecg_ray.load_encoder``, read by
    #: :meth:`embed`; a plain attribute, so never in the state dict
    input_spec = None

    # ``embed`` is this method on every encoder: a layer registered under that name (vit1d's patch
    # embedding, for its state-dict keys ``embed.*``) must be read through another attribute
    # (``ViT1d.patch_embedding``), since the method hides it from ``self.embed``.

    def embed(self, signal, *, fs: float, leads=None, pool: str = "mean", missing_leads: str | None = None,
              batch_windows: int = 256):
        """Embeddings of a recording as evaluation makes them: float32 numpy (feature_dim,).

        ``signal``: numpy array or torch tensor (time, leads) in mV at ``fs`` Hz, any length and
        rate, or a batch (records, time, leads) -> (records, feature_dim). ``leads``: the columns'
        names (None: the encoder's order). The signal is resampled to the encoder's rate with
        ``prepare``'s filter, its leads reordered by name, cut into the evaluation windows and the
        window features averaged (``pool="windows"``: one row per window). A record shorter than
        one window raises an error naming the minimum; missing leads raise one listing them, unless
        ``missing_leads="zero"`` (the default for encoders trained with RandomLeadMask). Runs in
        eval mode without gradients on the encoder's device. Needs :attr:`input_spec`, which
        ``ecg_ray.load_encoder`` sets (see :mod:`ecg_ray.portable`).
        """
        if self.input_spec is None or not _SIGNAL_EMBEDDER:
            raise CheckpointError(f"{type(self).__name__} has no input_spec (rate, leads, windows): load it with "
                                  "ecg_ray.load_encoder(PATH), or set encoder.input_spec = "
                                  "ecg_ray.portable.InputSpec(...)")
        return _SIGNAL_EMBEDDER[0](self, signal, fs=fs, leads=leads, pool=pool, missing_leads=missing_leads,
                                   batch_windows=batch_windows)

    def parameter_groups(self) -> list[nn.Module]:
        """Layer groups from the head down (discriminative learning rates); by default the direct
        children that hold parameters, the last defined nearest the head."""
        return [child for child in reversed(list(self.children())) if any(True for _ in child.parameters())]

    def forward_features(self, x):
        """(B, C_in, T) -> (B, C, ceil(T / downsample)) per-time-step features."""
        raise NotImplementedError(f"{type(self).__name__} gives no per-time-step features")


_ENCODERS: dict[str, Callable[..., Encoder]] = {}
#: every registered encoder factory by name, in registration order (a live, read-only view; the
#: package's own are all registered once ``ecg_ray.models`` is imported)
ENCODERS = MappingProxyType(_ENCODERS)
_discovered = False


def register_encoder(name: str) -> Callable:
    """Decorator: register the factory (or Encoder class) it decorates under ``name`` (``model.encoder``)."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise TypeError(f"encoder name must be a non-empty string without surrounding spaces, got {name!r}")

    def decorate(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        known = _ENCODERS.get(name)
        if known is not None and _origin(known) != _origin(factory):
            raise TypeError(f"encoder {name!r} is registered twice: {'.'.join(_origin(known))} and "
                            f"{'.'.join(_origin(factory))}")
        _ENCODERS[name] = factory
        return factory

    return decorate


def _origin(factory) -> tuple[str, str]:
    return factory.__module__, factory.__qualname__


def discover() -> None:
    """Import every module of ``ecg_ray.models`` once, so that each encoder file registers itself."""
    global _discovered
    if not _discovered:
        import_submodules("ecg_ray.models")
        _discovered = True


def encoders() -> dict[str, Callable[..., Encoder]]:
    """Every registered encoder factory by name, in registration order."""
    discover()
    return dict(_ENCODERS)


def check_encoder(encoder: nn.Module, name: str) -> Encoder:
    """``encoder`` if it declares what the package reads from an encoder, else TypeError (a programming error)."""
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder {name!r}: its factory must return an ecg_ray.models.Encoder, "
                        f"got {type(encoder).__qualname__}")
    cls = type(encoder).__qualname__
    if encoder.output not in ENCODER_OUTPUTS:
        raise TypeError(f"{cls}.output must be one of {ENCODER_OUTPUTS}, got {encoder.output!r}")
    if encoder.finetune_head not in FINETUNE_HEADS:
        raise TypeError(f"{cls}.finetune_head must be one of {FINETUNE_HEADS}, got {encoder.finetune_head!r}")
    for attribute, least in (("feature_dim", 1), ("downsample", 1)):
        value = getattr(encoder, attribute, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise TypeError(f"{cls}.{attribute} must be an int >= {least} (set it in __init__), got {value!r}")
    if encoder.output == "sequence" and not (callable(getattr(encoder, "encode", None))
                                              and callable(getattr(encoder, "context", None))):
        raise TypeError(f"{cls}: a sequence encoder must define encode(x) and context(z)")
    if encoder.grouped_finetuning and len(encoder.parameter_groups()) < 2:
        raise TypeError(f"{cls}.grouped_finetuning needs at least two parameter groups")
    return encoder


def build_encoder(name: str, in_channels: int = 12, **kwargs) -> Encoder:
    """Build a registered encoder; an unknown name raises ConfigError listing the valid names."""
    registered = encoders()
    if name not in registered:
        raise ConfigError(f"unknown encoder {name!r}; valid names: {', '.join(registered)}")
    return check_encoder(registered[name](in_channels=in_channels, **kwargs), name)


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder declares, read without allocating its weights."""

    name: str
    output: str
    feature_dim: int
    downsample: int
    finetune_head: str
    grouped_finetuning: bool


def encoder_info(name: str, in_channels: int = 12) -> EncoderInfo:
    """The declarations of encoder ``name`` (built on torch's meta device: no memory, no initialisation cost)."""
    import torch

    with torch.device("meta"):
        encoder = build_encoder(name, in_channels)
    return EncoderInfo(name=name, output=encoder.output, feature_dim=encoder.feature_dim,
                       downsample=encoder.downsample, finetune_head=encoder.finetune_head,
                       grouped_finetuning=encoder.grouped_finetuning)


def encoder_output(name: str) -> str:
    """What encoder ``name`` gives a method: "pooled" or "sequence"."""
    return encoder_info(name).output
