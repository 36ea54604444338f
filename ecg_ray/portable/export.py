"""Writing a safetensors export: ``ecg-ray export RUN --format safetensors --out DIR``.

The folder has the Hugging Face Hub layout (``huggingface_hub.upload_folder`` could push it as
it is): ``model.safetensors`` (the encoder's state dict, the tensors the torch export holds),
``config.json`` (architecture, input, windows, normalisation, method, training corpus, the run's
config; :func:`portable_config`) and ``README.md`` (a model card, :mod:`ecg_ray.portable.model_card`).

Atomic: a local folder is written beside ``DIR`` under a temporary name and renamed into place
(an existing export is moved aside first and deleted after); on cloud storage the files go up
with ``config.json`` last (an object appears only once complete), after an existing export's
``config.json`` was deleted, so a reader never takes a half-written folder for an export.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ecg_ray import storage
from ecg_ray.errors import CheckpointError, EcgRayError
from ecg_ray.portable.formats import (
    PORTABLE_CARD,
    PORTABLE_CONFIG,
    PORTABLE_FORMAT,
    PORTABLE_FORMAT_VERSION,
    PORTABLE_WEIGHTS,
)
from ecg_ray.portable.spec import NORMALIZATION_DETAIL, InputSpec, lead_masking_in

FILES = (PORTABLE_WEIGHTS, PORTABLE_CARD, PORTABLE_CONFIG)  # config.json last: it marks a complete folder


def _export_problem(location: str) -> str | None:
    """Why the existing ``location`` is not a folder this command may replace; None when it may."""
    from ecg_ray.portable.folder import read_portable_config

    if storage.is_file(location):
        return "it is a file, not a safetensors export folder"
    if not storage.is_uri(location):
        with os.scandir(location) as entries:
            if next(entries, None) is None:
                return None  # an empty directory
    try:
        read_portable_config(location)
    except EcgRayError:
        return f"it is a directory that is not an ecg_ray safetensors export (no {PORTABLE_CONFIG} of {PORTABLE_FORMAT})"
    return None


def check_folder_target(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = ()) -> str:
    """Refuse an ``--out`` folder that holds anything but a previous safetensors export, or an input; returns it normalized."""
    from ecg_ray.overwrite import input_overlap

    out = storage.normalize(out)
    overlap = input_overlap(out, inputs)
    if overlap is not None:
        raise CheckpointError(f"refusing to write the export to {out}: {overlap}")
    if storage.exists(out):
        problem = _export_problem(out)
        if problem is not None:
            raise CheckpointError(f"refusing to replace {out}: {problem}")
    return out


def training_corpus(config: dict[str, Any]) -> dict[str, Any]:
    """What the run trained on, from its stores' manifests: per store path, datasets, records, hours, rate.

    A store that cannot be read now (moved, deleted, no credentials) is recorded as the config names
    it, with ``"available": false``. Records and hours are the stores' totals; ``train_folds`` and
    ``datasets`` say which part of them the run selected.
    """
    from ecg_ray.data.store import EcgStore

    data = config.get("data") or {}
    specs = data.get("stores") or ([{"path": data["store"]}] if data.get("store") else [])
    stores = []
    for spec in specs:
        entry: dict[str, Any] = {"path": spec.get("path")}
        for key in ("weight", "folds", "datasets"):
            if spec.get(key) is not None:
                entry[key] = spec[key]
        try:
            manifest = EcgStore(spec["path"], tables=False).manifest
            fs = float(manifest["fs"])
            entry.update(available=True, records=int(manifest["records"]),
                         hours=round(int(manifest["samples"]) / fs / 3600, 3), fs=fs,
                         leads=list(manifest["leads"]), per_dataset=dict(manifest.get("per_dataset", {})),
                         per_fold=dict(manifest.get("per_fold", {})))
        except (EcgRayError, OSError, KeyError, TypeError, ValueError) as exc:
            entry.update(available=False, reason=" ".join(str(exc).split())[:300])
        stores.append(entry)
    readable = [s for s in stores if s["available"]]
    summary: dict[str, Any] = {
        "stores": stores,
        "available": bool(stores) and len(readable) == len(stores),
        "datasets": sorted({name for s in readable for name in s["per_dataset"]}),
        # totals of the stores that could be read (null when none could)
        "records": sum(s["records"] for s in readable) if readable else None,
        "hours": round(sum(s["hours"] for s in readable), 3) if readable else None,
        "train_folds": data.get("train_folds"),
        "dataset_filter": data.get("datasets"),
    }
    return summary


def portable_config(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a safetensors export of ``payload`` (what :func:`export_payload` returns)."""
    from ecg_ray.methods.registry import method_display
    from ecg_ray.models import encoder_info

    config = payload["config"]
    spec = InputSpec.from_dict(payload["input_spec"])
    info = encoder_info(payload["encoder"], in_channels=len(spec.leads))
    return {
        "format": PORTABLE_FORMAT,
        "format_version": PORTABLE_FORMAT_VERSION,
        "architecture": payload["encoder"],
        "encoder_options": {},
        "in_channels": len(spec.leads),
        "feature_dim": info.feature_dim,
        "output": info.output,
        "downsample": info.downsample,
        "sampling_rate_hz": spec.fs,
        "leads": list(spec.leads),
        "units": spec.units,
        "input_length": spec.input_length,
        "window": spec.window,
        "stride": spec.stride,
        "pooling": spec.pooling,
        "normalization": {"type": spec.normalization, "detail": NORMALIZATION_DETAIL},
        "lead_masking": lead_masking_in(config),
        "method": payload["method"],
        "method_display": method_display(payload["method"]),
        "epoch": payload["epoch"],
        "selection": payload["selection"],
        "training_corpus": training_corpus(config),
        "ecg_ray_version": payload["ecg_ray_version"],
        "tensors": len(payload["state_dict"]),
        "parameters": int(sum(t.numel() for t in payload["state_dict"].values())),
        "config": config,
    }


def _write_local_files(folder: Path, weights: dict, config: dict[str, Any], card: str) -> None:
    from safetensors.torch import save_file

    # clones: safetensors refuses tensors that share memory, and wants them contiguous
    tensors = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in weights.items()}
    save_file(tensors, str(folder / PORTABLE_WEIGHTS), metadata={"format": "pt", "ecg_ray_format": PORTABLE_FORMAT,
                                                                 "architecture": config["architecture"]})
    (folder / PORTABLE_CARD).write_text(card, encoding="utf-8")
    (folder / PORTABLE_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    # safetensors creates its file owner-only: give it the mode open() gave the others (0666 less the umask)
    os.chmod(folder / PORTABLE_WEIGHTS, (folder / PORTABLE_CONFIG).stat().st_mode & 0o777)
    for name in FILES:
        with open(folder / name, "rb") as f:
            os.fsync(f.fileno())


def write_portable(payload: dict[str, Any], out: str) -> dict[str, Any]:
    """Write the export folder ``out`` (local path or URI) atomically; returns its config.json dict."""
    from ecg_ray.portable.model_card import model_card

    config = portable_config(payload)
    card = model_card(config)
    out = storage.normalize(out)
    if storage.is_uri(out):
        with tempfile.TemporaryDirectory(prefix="ecg_ray_export_") as tmp:
            _write_local_files(Path(tmp), payload["state_dict"], config, card)
            storage.delete_file(storage.join(out, PORTABLE_CONFIG))  # an old export stops being one first
            storage.upload_dir(tmp, out, last=(PORTABLE_CONFIG,))
        return config
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    staging = target.with_name(f".{target.name}.tmp-{tag}")
    staging.mkdir()
    try:
        _write_local_files(staging, payload["state_dict"], config, card)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{tag}")
            os.replace(target, old)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(old, target)  # put the previous export back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return config
