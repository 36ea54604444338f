"""Reading a safetensors export: ``model.safetensors`` + ``config.json`` (+ ``README.md``) in one folder.

Loading needs torch, safetensors and ecg_ray's model definitions only: no Ray, pandas, zarr or
pyarrow for a local folder (a cloud URI is read through :mod:`ecg_ray.storage`, i.e. pyarrow).
Every way a folder can be wrong (missing file, another format or a newer version, an unknown
architecture, weights that do not fit) is one :class:`~ecg_ray.errors.CheckpointError` line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ecg_ray import storage
from ecg_ray.errors import CheckpointError
from ecg_ray.portable.formats import (
    PORTABLE_CONFIG,
    PORTABLE_FORMAT,
    PORTABLE_FORMAT_VERSION,
    PORTABLE_WEIGHTS,
)
from ecg_ray.portable.spec import spec_from_portable_config

_HINT = "ecg-ray export RUN --format safetensors --out DIR writes one"


def _is_dir(location: str) -> bool:
    return storage.is_dir(location) if storage.is_uri(location) else os.path.isdir(location)


def _is_file(location: str) -> bool:
    return storage.is_file(location) if storage.is_uri(location) else os.path.isfile(location)


def _read_bytes(location: str) -> bytes:
    if storage.is_uri(location):
        return storage.read_bytes(location)
    return Path(location).read_bytes()


def portable_folder(path: str | os.PathLike) -> str | None:
    """The folder of a safetensors export that ``path`` names (the folder, its model.safetensors or its
    config.json), or None when ``path`` names something else (a torch export file, or nothing)."""
    location = storage.normalize(path)
    if _is_dir(location):
        return location
    if storage.name(location) in (PORTABLE_WEIGHTS, PORTABLE_CONFIG) or location.endswith(".safetensors"):
        return storage.parent(location)
    return None


def read_portable_config(folder: str) -> dict[str, Any]:
    """The checked ``config.json`` of an export folder."""
    path = storage.join(folder, PORTABLE_CONFIG)
    if not _is_file(path):
        found = "no such folder" if not _is_dir(folder) else f"no {PORTABLE_CONFIG}"
        raise CheckpointError(f"{folder}: {found}; not an ecg_ray safetensors export ({_HINT})")
    try:
        config = json.loads(_read_bytes(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != PORTABLE_FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path}: format {found!r}, not {PORTABLE_FORMAT!r}; not an ecg_ray safetensors export")
    version = config.get("format_version")
    if version != PORTABLE_FORMAT_VERSION:
        newer = isinstance(version, int) and version > PORTABLE_FORMAT_VERSION
        raise CheckpointError(f"{path}: format_version {version!r}, this ecg_ray reads {PORTABLE_FORMAT_VERSION}"
                              + ("; upgrade ecg_ray to load it" if newer else ""))
    return config


def read_portable_weights(folder: str, map_location="cpu") -> dict[str, torch.Tensor]:
    """The tensors of an export folder's ``model.safetensors``."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = storage.join(folder, PORTABLE_WEIGHTS)
    if not _is_file(path):
        raise CheckpointError(f"{folder}: no {PORTABLE_WEIGHTS} beside its {PORTABLE_CONFIG} (an incomplete copy?)")
    try:
        weights = load(_read_bytes(path))
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot load, the file is truncated or not safetensors ({exc})") from None
    return {name: tensor.to(map_location) for name, tensor in weights.items()}


def is_portable_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` means a safetensors export: a ``.safetensors`` or ``config.json`` path, or a folder
    with a ``config.json`` (a folder without one is left to the torch-file reader's messages)."""
    folder = portable_folder(path)
    if folder is None:
        return False
    return folder != storage.normalize(path) or _is_file(storage.join(folder, PORTABLE_CONFIG))


def read_portable_payload(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """A safetensors export as the dict a torch export holds (``format`` ``ecg_ray.encoder.v1``, ``encoder``,
    ``state_dict``, ``fs``, ``input_length``, ``input_spec``, ``method``, ``config``, ...), checked: the
    weights fit the architecture. Readers of encoder files (``evaluate --encoder``, ``embed --encoder``)
    take either format through it."""
    from ecg_ray.portable.formats import ENCODER_FORMAT
    from ecg_ray.portable.weights import check_encoder_weights

    folder = portable_folder(path) or storage.normalize(path)
    config = read_portable_config(folder)
    spec = spec_from_portable_config(config, storage.join(folder, PORTABLE_CONFIG))
    name = config.get("architecture")
    options = config.get("encoder_options") or {}
    if not isinstance(name, str) or not isinstance(options, dict):
        raise CheckpointError(f"{folder}: config.json needs architecture (a name) and encoder_options (a mapping)")
    weights = read_portable_weights(folder, map_location)
    check_encoder_weights(name, weights, storage.join(folder, PORTABLE_WEIGHTS), in_channels=len(spec.leads),
                          **options)
    return {"format": ENCODER_FORMAT, "encoder": name, "encoder_options": options, "state_dict": weights,
            "method": config.get("method"), "epoch": config.get("epoch"), "selection": config.get("selection"),
            "fs": spec.fs, "input_length": spec.input_length, "input_spec": spec.to_dict(),
            "config": config.get("config") or {}, "ecg_ray_version": config.get("ecg_ray_version"),
            "exported_as": PORTABLE_FORMAT}


def load_portable(path: str | os.PathLike, map_location="cpu"):
    """The encoder of a safetensors export folder, weights loaded, ``input_spec`` set, in eval mode."""
    from ecg_ray.models import build_encoder
    from ecg_ray.portable.spec import InputSpec

    payload = read_portable_payload(path, map_location)
    spec = InputSpec.from_dict(payload["input_spec"])
    encoder = build_encoder(payload["encoder"], in_channels=len(spec.leads), **payload["encoder_options"])
    encoder.load_state_dict(payload["state_dict"])
    encoder.input_spec = spec
    return encoder.to(map_location).eval()
