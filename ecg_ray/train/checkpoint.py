"""Checkpoints and exported encoders: atomic writes, ``torch.load(..., weights_only=True)``.

A checkpoint directory holds ``state.pt`` (model, optimizer, scheduler, grad scaler, method
state, epoch, RNG states, config) and ``history.json`` (per-epoch metrics so far). Files are
written under a temporary name and renamed, so a crash mid-write never leaves a file that loads
wrong; anything that is not an ecg_ray checkpoint gives a clear error. Run directories and
encoder files may be local paths or cloud URIs (see :mod:`ecg_ray.storage`).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ecg_ray import storage
from ecg_ray.errors import CheckpointError, EcgRayError
from ecg_ray.portable.encoder_file import read_encoder_file
from ecg_ray.portable.formats import CHECKPOINT_FORMAT, ENCODER_FORMAT

# The run directory's file names and Ray's committed checkpoint: one torch-free definition the report shares.
from ecg_ray.run_layout import HISTORY_FILE, RAY_SNAPSHOT, STATE_FILE, committed_checkpoint_name  # noqa: F401
from ecg_ray.version import __version__


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a local path or URI; readers see the old file or the new one, never a part."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    storage.write_bytes(buffer.getvalue(), path)


def atomic_write_text(text: str, path: str | Path) -> None:
    storage.write_text(text, path)


def training_state(config, fs: float, *, model: dict, optimizer: dict, scheduler: dict, scaler: dict | None,
                   epoch: int, method_state: dict | None = None, best: dict | None = None) -> dict[str, Any]:
    """The one layout of a checkpoint's ``state.pt``, for pretraining and downstream runs alike.

    ``model``, ``optimizer``, ``scheduler``, ``scaler`` are state dicts (``scaler`` None without a grad
    scaler), all of the same moment, which ``epoch`` names; ``method_state`` is a method's extra state
    (SwAV's queue; none downstream); ``best`` is the run's best epoch by its validation metric
    (``epoch``, ``metric``, ``value``, ``higher_is_better``, ``encoder`` weights), which
    ``ecg-ray export --best`` reads; ``config`` is the run's :class:`ecg_ray.config.Config`.
    """
    from ecg_ray.config import to_dict

    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler or {},
            "method_state": method_state or {}, "epoch": int(epoch), "torch_rng": torch.get_rng_state(),
            "config": to_dict(config), "fs": fs, "best": best}


def save_checkpoint(directory: Path, state: dict[str, Any], history: list[dict]) -> None:
    atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, storage.join(directory, STATE_FILE))
    atomic_write_text(json.dumps(history, indent=1), storage.join(directory, HISTORY_FILE))


def _checked_state(source, label: str, map_location) -> dict[str, Any]:
    """torch.load (weights only) of a state file or buffer, refusing anything that is not ours."""
    try:
        state = (storage.torch_load(source, map_location=map_location) if isinstance(source, str)
                 else torch.load(source, map_location=map_location, weights_only=True))
    except Exception as exc:
        raise CheckpointError(f"{label}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{label}: not an ecg_ray checkpoint (format {found})")
    return state


def load_state(directory: str | Path, map_location="cpu") -> dict[str, Any]:
    path = storage.join(directory, STATE_FILE)
    if not storage.exists(path):
        raise CheckpointError(f"{directory}: no {STATE_FILE}; not an ecg_ray checkpoint")
    return _checked_state(path, path, map_location)


def read_ray_checkpoint(checkpoint, map_location="cpu") -> tuple[dict[str, Any], list[dict]]:
    """(state, history) of a ``ray.train.Checkpoint``, read in place through its own filesystem.

    Not ``Checkpoint.as_directory()``: for cloud storage that downloads into a temp directory shared
    by the workers of a node, and a worker that arrives after the first download has finished
    downloads again over the files another worker is still reading (seen as a corrupt state.pt
    when two workers on one node resumed from S3).
    """
    import pyarrow.fs as pafs

    fs, root = checkpoint.filesystem, checkpoint.path.rstrip("/")
    if isinstance(fs, pafs.LocalFileSystem):
        return load_state(root, map_location), load_history(root)
    try:
        with fs.open_input_stream(f"{root}/{STATE_FILE}") as f:
            state_bytes = f.read()
    except OSError as exc:
        raise CheckpointError(f"{root}: cannot read {STATE_FILE} ({exc})") from None
    try:
        with fs.open_input_stream(f"{root}/{HISTORY_FILE}") as f:
            history = json.loads(f.read())
    except FileNotFoundError:
        history = []
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{root}: cannot read {HISTORY_FILE} ({exc})") from None
    return _checked_state(io.BytesIO(state_bytes), f"{root}/{STATE_FILE}", map_location), history


def load_history(directory: str | Path) -> list[dict]:
    path = storage.join(directory, HISTORY_FILE)
    return json.loads(storage.read_text(path)) if storage.exists(path) else []


def latest_checkpoint(run_dir: str | Path) -> str:
    """The checkpoint Ray Train would resume the run from.

    That is the committed one named in Ray's snapshot; without a snapshot (older runs, copies of a
    run), the checkpoint with the longest history.
    """
    if not storage.is_dir(run_dir):
        raise CheckpointError(f"{run_dir}: no such run directory")
    committed = committed_checkpoint_name(run_dir)
    if committed and storage.exists(storage.join(run_dir, committed, STATE_FILE)):
        return storage.join(run_dir, committed)
    candidates = []
    for directory in storage.list_dirs(run_dir, "checkpoint_*"):
        if not storage.exists(storage.join(directory, STATE_FILE)):
            continue
        try:
            epochs = len(load_history(directory))
        except (ValueError, storage.StorageError):
            continue  # still being written (Ray copies checkpoint files in place) or damaged
        candidates.append((epochs, storage.name(directory), directory))
    if not candidates:
        raise CheckpointError(f"{run_dir}: no checkpoint found (checkpoint_*/{STATE_FILE})")
    return max(candidates)[2]


def checkpoint_problem(directory: str | Path) -> str | None:
    """Why a checkpoint cannot be resumed from (its state or history does not load); None if it can."""
    try:
        load_state(directory)
        history = load_history(directory)
    except CheckpointError as exc:
        return str(exc)
    except (ValueError, storage.StorageError) as exc:
        return f"{storage.join(directory, HISTORY_FILE)}: cannot load history ({type(exc).__name__}: {exc})"
    if not isinstance(history, list):
        return f"{storage.join(directory, HISTORY_FILE)}: not a list of epochs"
    return None


@dataclass
class ResumePoint:
    """Where ``--resume`` continues a run: the checkpoint Ray will restore and the ones passed over."""

    #: the checkpoint Ray Train restores (None: the run has no committed checkpoint, Ray starts over)
    checkpoint: str | None
    #: (checkpoint, why it does not load) for each newer checkpoint passed over, newest first
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: copy of Ray's snapshot as it was before it was changed to pass them over
    snapshot_backup: str | None = None


def prepare_resume(run_dir: str | Path) -> ResumePoint:
    """Make Ray Train resume ``run_dir`` from its newest checkpoint that loads; never delete one.

    Ray restores the checkpoint its snapshot names as latest. When that one does not load (a
    truncated ``state.pt``), each tracked checkpoint is tried from the newest, and the snapshot is
    rewritten to forget the ones that fail, naming the one that loads as latest. Forgetting is
    what keeps the bad ones: Ray deletes only checkpoints it tracks (beyond
    ``train.keep_checkpoints``), and restores only the latest one it tracks. The snapshot as it
    was is kept beside it (``checkpoint_manager_snapshot.json.before-resume-<time>``).
    """
    run_dir = storage.normalize(run_dir)
    path = storage.join(run_dir, RAY_SNAPSHOT)
    if not storage.exists(path):
        return ResumePoint(None)  # nothing committed: Ray starts the run from its first epoch
    original = storage.read_text(path)
    try:
        snapshot = json.loads(original)
        latest = snapshot["latest_checkpoint_result"]
        results = snapshot["checkpoint_results"]
        indices = snapshot["checkpoint_report_indices"]
        if latest is not None:
            latest_name = str(latest["checkpoint_dir_name"])
            names = [str(r["checkpoint_dir_name"]) for r in results]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable Ray Train snapshot ({type(exc).__name__}: {exc}); "
                              "cannot tell which checkpoint to resume from") from None
    if latest is None:
        return ResumePoint(None)
    # The latest first, then the other tracked checkpoints from the most recently reported.
    order = [latest_name] + [name for _, name in sorted(zip(indices, names, strict=True), reverse=True)
                             if name != latest_name]
    skipped: list[tuple[str, str]] = []
    for name in order:
        problem = checkpoint_problem(storage.join(run_dir, name))
        if problem is None:
            break
        skipped.append((storage.join(run_dir, name), problem))
    else:
        tried = "; ".join(f"{location}: {why}" for location, why in skipped)
        raise CheckpointError(f"{run_dir}: no checkpoint of this run loads, nothing to resume from ({tried}); "
                              "the checkpoints are left as they are")
    if not skipped:
        return ResumePoint(storage.join(run_dir, latest_name))
    bad = {storage.name(location) for location, _ in skipped}
    backup = f"{path}.before-resume-{time.strftime('%Y%m%d-%H%M%S')}"
    storage.write_text(original, backup)
    keep = [k for k, n in enumerate(names) if n not in bad]
    snapshot["checkpoint_results"] = [results[k] for k in keep]
    snapshot["checkpoint_report_indices"] = [indices[k] for k in keep]
    snapshot["latest_checkpoint_result"] = results[names.index(name)]
    pending = [k for k, r in enumerate(snapshot.get("pending_training_results", []))
               if str(r.get("checkpoint_dir_name")) not in bad]
    for key in ("pending_training_results", "pending_validation_specs"):  # parallel lists
        if key in snapshot:
            snapshot[key] = [snapshot[key][k] for k in pending]
    for key in ("validated_checkpoint_dir_names", "timed_out_validation_checkpoint_dir_names",
                "failed_validation_checkpoint_dir_names"):
        if key in snapshot:
            snapshot[key] = [n for n in snapshot[key] if n not in bad]
    storage.write_text(json.dumps(snapshot), path)
    return ResumePoint(storage.join(run_dir, name), skipped, backup)


def encoder_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The trained encoder's weights in a checkpoint's model: under ``encoder.``, or under the submodule its
    pretraining method names (``Method.exported_submodule``: JEPA's EMA target, ``target_encoder.``)."""
    from ecg_ray.methods.registry import get_method, import_method_module

    config = state.get("config") or {}
    method = config.get("method") or {}
    prefix = "encoder."
    try:
        import_method_module(method.get("module", ""))
        cls = get_method(method.get("name", ""))
        prefix = cls.exported_submodule(config.get(cls.name) or {}) + "."
    except EcgRayError:
        pass  # a method that is no longer registered: its encoder is where every method keeps it
    if not any(k.startswith(prefix) for k in state["model"]):
        prefix = "encoder."  # a downstream run's classifier keeps its encoder there, whatever method.name says
    return {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}


#: ``ecg-ray export --format``: one weights-only torch file, or a Hugging Face Hub style folder
EXPORT_FORMATS = ("torch", "safetensors")


def export_payload(run_dir: str | Path, best: bool = False) -> tuple[dict[str, Any], str]:
    """(the export of a run's encoder, the checkpoint it comes from): what both export formats write.

    ``best``: the encoder of the run's best epoch by its validation metric instead of the newest
    checkpoint's. ``input_spec`` is what ``encoder.embed`` needs (rate, leads, crop, windows).
    """
    from ecg_ray.portable.spec import spec_from_run

    checkpoint = latest_checkpoint(run_dir)
    state = load_state(checkpoint)
    config = state["config"]
    selected: dict[str, Any] | None = None
    if best:
        selected = state.get("best")
        if not selected:
            raise CheckpointError(f"{checkpoint}: no best epoch recorded; the run had no validation metric "
                                  "(no validation folds, or a run from before ecg_ray recorded it); "
                                  "export the latest epoch instead (without --best)")
        weights = dict(selected["encoder"])
        epoch = int(selected["epoch"])
    else:
        weights = encoder_weights(state)
        epoch = int(state["epoch"])
    if not weights:
        raise CheckpointError(f"{checkpoint}: model has no encoder weights")
    fs = float(state.get("fs", 100.0))
    payload = {
        "format": ENCODER_FORMAT,
        "encoder": config["model"]["encoder"],
        "state_dict": weights,
        "method": config["method"]["name"],
        "epoch": epoch,
        "selection": ({"metric": selected["metric"], "value": float(selected["value"])} if selected
                      else {"metric": "latest", "value": None}),
        "fs": fs,
        "input_length": int(config["data"]["crop"]),
        "input_spec": spec_from_run(config, fs).to_dict(),
        "config": config,
        "ecg_ray_version": __version__,
    }
    return payload, checkpoint


def export_encoder(run_dir: Path, out: Path, best: bool = False, format: str = "torch") -> dict[str, Any]:
    """Write the encoder of a run's newest checkpoint as a standalone export.

    ``format="torch"``: one weights-only torch file (:func:`load_encoder_payload` reads it).
    ``format="safetensors"``: a folder ``out`` with ``model.safetensors``, ``config.json`` and a
    ``README.md`` model card (:mod:`ecg_ray.portable.export`), written atomically.

    ``best``: the encoder of the run's best epoch by its validation metric (the online probe's
    macro AUC, else the held-out SSL loss), which every checkpoint carries; the summary names the
    metric, its value and the epoch.

    An existing ``out`` is replaced only when it is an ecg_ray export of the same format (checked
    before the run is read, and again right before writing); anything else is refused.
    """
    from ecg_ray.overwrite import check_file_target

    if format not in EXPORT_FORMATS:
        raise CheckpointError(f"export format {format!r}: choose one of {', '.join(EXPORT_FORMATS)}")

    def is_encoder_export(path: str) -> bool:
        try:
            payload = load_encoder_payload(path)
        except EcgRayError:
            return False
        return "exported_as" not in payload  # a torch export, not the weights of a safetensors folder

    def check_out() -> str:
        if format == "safetensors":
            from ecg_ray.portable.export import check_folder_target

            return check_folder_target(out, inputs=[run_dir])
        return check_file_target(out, replaceable=is_encoder_export, what="an ecg_ray encoder export")

    check_out()
    payload, checkpoint = export_payload(run_dir, best)
    out = check_out()
    if format == "safetensors":
        from ecg_ray.portable.export import write_portable

        write_portable(payload, out)
    else:
        atomic_torch_save(payload, out)
    return {"encoder": payload["encoder"], "method": payload["method"], "epoch": payload["epoch"],
            "selected_by": payload["selection"]["metric"], "selected_value": payload["selection"]["value"],
            "checkpoint": checkpoint, "out": out, "format": format, "tensors": len(payload["state_dict"])}


def load_encoder_payload(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """The dict written by :func:`export_encoder`, loaded weights-only; one line saying what the file is otherwise."""
    return read_encoder_file(storage.normalize(path), map_location)


def load_encoder(path: str | Path, map_location="cpu") -> torch.nn.Module:
    """Rebuild an exported encoder, in eval mode: ``load_encoder(PATH)(x)`` gives (B, feature_dim).

    ``PATH``: a torch export file (``ecg-ray export RUN --out encoder.pt``) or a safetensors export
    folder (``--format safetensors --out DIR``; the folder, or its ``model.safetensors``), local or
    URI. The folder loads without Ray, pandas or zarr. The encoder carries ``input_spec`` (rate,
    leads, windows), so ``encoder.embed(signal, fs=..., leads=[...])`` works on any recording; call
    ``.train()`` to fine-tune it. Anything else raises one CheckpointError line.
    """
    from ecg_ray.models import build_encoder
    from ecg_ray.portable.folder import load_portable, portable_folder
    from ecg_ray.portable.spec import InputSpec, spec_from_run
    from ecg_ray.portable.weights import check_encoder_weights

    if portable_folder(path) is not None:  # a folder, or a .safetensors / config.json path
        return load_portable(path, map_location)
    payload = load_encoder_payload(path, map_location)
    check_encoder_weights(payload["encoder"], payload["state_dict"], storage.normalize(path))
    encoder = build_encoder(payload["encoder"])
    encoder.load_state_dict(payload["state_dict"])
    recorded = payload.get("input_spec")
    if isinstance(recorded, dict):  # exports from before ecg_ray recorded it: the run config says the same
        spec = InputSpec.from_dict(recorded)
    else:
        spec = spec_from_run(payload.get("config") or {}, float(payload.get("fs", 100.0)))
    encoder.input_spec = spec
    return encoder.to(map_location).eval()


def run_encoder_source(run_dir: str):
    """The encoder of a run's latest checkpoint (the weights ``ecg-ray export`` would write), as an
    :class:`ecg_ray.embedding.source.EncoderSource` for ``ecg-ray embed --pretrained`` and the embedding probes."""
    from ecg_ray.embedding.source import EncoderSource
    from ecg_ray.portable.weights import check_encoder_weights

    checkpoint = latest_checkpoint(storage.normalize(run_dir))
    state = load_state(checkpoint)
    config = state["config"]
    weights = encoder_weights(state)
    name = config["model"]["encoder"]
    check_encoder_weights(name, weights, checkpoint)
    return EncoderSource(name=name, state_dict=weights, fs=float(state.get("fs", 100.0)),
                         input_length=int(config["data"]["crop"]), location=storage.normalize(run_dir),
                         method=config["method"]["name"])
