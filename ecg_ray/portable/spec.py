"""What an exported encoder expects as input: :class:`InputSpec`, read from either export format.

An encoder was trained on crops of a prepared store: float32 millivolts, leads in the store's
canonical order, at the store's rate. Nothing else is done to the signal between the store and
the encoder (no per-record or per-lead scaling, no baseline removal, no filtering beyond the
resampling filter of ``prepare``; augmentations are training-only). Evaluation cuts each record
into sliding windows (``data.window`` / ``data.stride`` samples) and averages per record.
:class:`InputSpec` carries exactly these facts, so ``encoder.embed`` can bring any recording to
the same form. This module imports neither torch nor numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ecg_ray.errors import CheckpointError

#: the 12 leads in the order every store (and so every encoder's input channel) holds them
#: (a copy of :data:`ecg_ray.data.signal.CANONICAL_LEADS`, which imports scipy)
CANONICAL_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

#: the only normalisation there is: the store's millivolts go to the encoder as they are
NORMALIZATION_NONE = "none"
NORMALIZATION_DETAIL = (
    "none: the encoder sees float32 millivolts as `ecg-ray prepare` stores them (physical units from the "
    "source, resampled to the store's rate with scipy's polyphase anti-aliasing filter, antireflect padding); "
    "no per-record or per-lead scaling, no mean or baseline removal, no other filtering; training "
    "augmentations are not applied at inference")
POOLINGS = ("mean",)
#: ``embed(..., pool=...)``: one vector per record (mean over windows) or one per window
POOL_CHOICES = ("mean", "windows")
#: the augmentation whose presence in a run's config means the encoder saw leads zeroed in training
LEAD_MASK_AUGMENTATION = "RandomLeadMask"


@dataclass(frozen=True)
class InputSpec:
    """The input an exported encoder was trained on, and how evaluation windows and pools records.

    Lengths (``input_length``, ``window``, ``stride``) are samples at ``fs``. ``window`` 0 means the
    whole record is one window (encoders that accept any length).
    """

    #: sampling rate of the training store, Hz
    fs: float
    #: lead names, in the order of the encoder's input channels
    leads: tuple[str, ...] = CANONICAL_LEADS
    #: samples of the training crop
    input_length: int = 250
    #: evaluation window and stride, samples
    window: int = 250
    stride: int = 125
    units: str = "mV"
    #: how windows are pooled into one record embedding
    pooling: str = "mean"
    #: what is done to the signal before the encoder (only "none" exists)
    normalization: str = NORMALIZATION_NONE
    #: the run trained with RandomLeadMask: missing leads may be zeroed
    lead_masking: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """The spec :meth:`to_dict` wrote (keys of later ecg_ray versions are left out)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "leads" in values:
            values["leads"] = tuple(values["leads"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["leads"] = list(self.leads)
        return data

    @property
    def min_samples(self) -> int:
        """The shortest record (samples at ``fs``) that gives one window."""
        return self.window if self.window > 0 else 1


def lead_masking_in(config: Mapping[str, Any] | None) -> bool:
    """True when a run's config names the RandomLeadMask augmentation anywhere in its augmentation specs."""

    def names(node: Any) -> Iterable[str]:
        if isinstance(node, Mapping):
            if isinstance(node.get("name"), str):
                yield node["name"]
            for value in node.values():
                yield from names(value)
        elif isinstance(node, list | tuple):
            for item in node:
                yield from names(item)

    config = config or {}
    specs = [config.get("augmentations")]
    # a method may keep its own augmentation lists in its section (e.g. per-view pipelines)
    specs += [section for key, section in config.items() if key not in ("data", "model", "optim", "train", "eval")
              and isinstance(section, Mapping)]
    return any(name == LEAD_MASK_AUGMENTATION for spec in specs for name in names(spec))


def spec_from_run(config: Mapping[str, Any], fs: float) -> InputSpec:
    """The input spec of an encoder trained by a run with ``config`` (a config dict) on a store at ``fs`` Hz."""
    data = config.get("data") or {}
    return InputSpec(fs=float(fs), leads=CANONICAL_LEADS, input_length=int(data.get("crop", 250)),
                     window=int(data.get("window", 250)), stride=int(data.get("stride", 125)),
                     lead_masking=lead_masking_in(config))


def spec_from_portable_config(config: Mapping[str, Any], source: str) -> InputSpec:
    """The input spec recorded in a safetensors export's ``config.json``; CheckpointError when a key is bad."""
    try:
        leads = tuple(str(lead) for lead in config["leads"])
        spec = InputSpec(fs=float(config["sampling_rate_hz"]), leads=leads, input_length=int(config["input_length"]),
                         window=int(config["window"]), stride=int(config["stride"]), units=str(config["units"]),
                         pooling=str(config["pooling"]), normalization=_normalization_type(config["normalization"]),
                         lead_masking=bool(config.get("lead_masking", False)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: config.json lacks or mangles an input key "
                              f"({type(exc).__name__}: {exc})") from None
    problems = []
    if not spec.fs > 0:
        problems.append(f"sampling_rate_hz {spec.fs}")
    if spec.window < 0 or spec.stride <= 0 or spec.input_length <= 0:
        problems.append(f"window/stride/input_length {spec.window}/{spec.stride}/{spec.input_length}")
    if spec.units != "mV":
        problems.append(f"units {spec.units!r} (this ecg_ray knows mV)")
    if spec.pooling not in POOLINGS:
        problems.append(f"pooling {spec.pooling!r} (this ecg_ray knows {', '.join(POOLINGS)})")
    if spec.normalization != NORMALIZATION_NONE:
        problems.append(f"normalization {spec.normalization!r} (this ecg_ray knows {NORMALIZATION_NONE!r})")
    if not leads or len(set(leads)) != len(leads):
        problems.append(f"leads {list(leads)}")
    if problems:
        raise CheckpointError(f"{source}: config.json has an input this ecg_ray cannot prepare: {'; '.join(problems)}")
    return spec


def _normalization_type(value: Any) -> str:
    return str(value.get("type")) if isinstance(value, Mapping) else str(value)
