"""Which encoder an embedding run uses, and what its input must look like (rate, window).

An :class:`EncoderSource` holds everything a Ray actor needs to rebuild the encoder (registered
name and weights) and what the driver needs to plan the windows: the sampling rate the encoder
was trained at (``fs``) and its training crop (``input_length`` samples). It is read from

* an exported encoder (``ecg-ray export RUN --out enc.pt``, or the ``--format safetensors`` folder),
* a pretraining or evaluation run directory (its latest checkpoint, the weights ``export`` picks),
* nothing: a random-init encoder (``model.encoder`` seeded with ``seed``), the baseline every
  probe needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ecg_ray import storage
from ecg_ray.data.signal import CANONICAL_LEADS


@dataclass(frozen=True)
class EncoderSource:
    """A registered encoder's name and weights, with the input it was trained on."""

    #: registered encoder name (``ecg_ray.models``)
    name: str
    #: its weights; None = random initialisation with ``seed``
    state_dict: dict[str, Any] | None
    #: sampling rate of the training data (Hz): records are resampled to it before windowing
    fs: float
    #: training crop in samples (at ``fs``): the default window
    input_length: int
    #: where it came from (file, run directory) or "" for random init
    location: str = ""
    method: str | None = None
    seed: int = 0
    #: the evaluation windows the export records (samples at ``fs``; 0 = whole record); None = the
    #: training crop and half of it
    window: int | None = None
    stride: int | None = None
    #: lead names in the order of the encoder's input channels
    leads: tuple[str, ...] = CANONICAL_LEADS

    def build(self):
        """The encoder in eval mode on the CPU, with these weights."""
        import torch

        from ecg_ray.models import build_encoder

        if self.state_dict is None:
            torch.manual_seed(self.seed)
        encoder = build_encoder(self.name)
        if self.state_dict is not None:
            encoder.load_state_dict(self.state_dict)
        return encoder.eval()

    def describe(self) -> dict[str, Any]:
        """What the embedding file records about its encoder (no weights)."""
        return {"encoder": self.name, "location": self.location or None, "method": self.method,
                "fs": self.fs, "input_length": self.input_length, "leads": list(self.leads),
                "random_init_seed": self.seed if self.state_dict is None else None}


def _spec_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """window, stride, leads from an export's ``input_spec`` (older files have none: the defaults)."""
    spec = payload.get("input_spec") or {}
    fields = {}
    if spec.get("window") is not None:
        fields["window"], fields["stride"] = int(spec["window"]), int(spec.get("stride") or 0)
    if spec.get("leads"):
        fields["leads"] = tuple(spec["leads"])
    return fields


def from_encoder_file(path: str) -> EncoderSource:
    """The encoder ``ecg-ray export`` wrote: a torch file or a safetensors folder (both read by
    :func:`ecg_ray.portable.encoder_file.read_encoder_file`, weights checked against the architecture)."""
    from ecg_ray.portable.encoder_file import read_encoder_file
    from ecg_ray.portable.weights import check_encoder_weights

    path = storage.normalize(path)
    payload = read_encoder_file(path)
    check_encoder_weights(payload["encoder"], payload["state_dict"], path)
    length = payload.get("input_length") or (payload.get("config") or {}).get("data", {}).get("crop", 250)
    return EncoderSource(name=payload["encoder"], state_dict=payload["state_dict"],
                         fs=float(payload.get("fs", 100.0)), input_length=int(length), location=path,
                         method=payload.get("method"), **_spec_fields(payload))


def random_init(name: str, fs: float, input_length: int, seed: int = 0) -> EncoderSource:
    """A random-init encoder ``name`` (seeded), read at the store's rate with windows of ``input_length``."""
    from ecg_ray.errors import ConfigError
    from ecg_ray.models import ENCODERS

    if name not in ENCODERS:
        raise ConfigError(f"model.encoder: unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return EncoderSource(name=name, state_dict=None, fs=float(fs), input_length=int(input_length), seed=seed)
