"""Reading an exported encoder file (a torch file or a safetensors folder) in the driver.

``torch.load(..., weights_only=True)`` of a file that is not ours fails with torch's own advice
("re-running with weights_only=False will likely succeed"), which is wrong for ecg_ray: an encoder
file never needs it, and following it would run arbitrary code. :func:`read_encoder_file` says
instead what the file is (not a torch file, a torch file of Python objects, truncated, a training
checkpoint, ...). Whether the weights fit their encoder is :mod:`ecg_ray.portable.weights`' job.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

import torch

from ecg_ray import storage
from ecg_ray.errors import CheckpointError
from ecg_ray.portable.formats import CHECKPOINT_FORMAT, ENCODER_FORMAT

#: what the first bytes of a file say it is (torch writes a zip archive, or a legacy pickle that
#: starts with its magic number)
_TORCH_ZIP = b"PK\x03\x04"
_TORCH_LEGACY = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_FOREIGN = ((b"\x93NUMPY", "a NumPy .npy array"), (b"\x89HDF", "an HDF5 file"), (b"\x80", "a Python pickle"),
            (b"\x1f\x8b", "a gzip file"), (b"{", "JSON or text"))
_EXPORT_HINT = "ecg-ray export RUN_DIR --out FILE writes one"


def _not_encoder(path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is not an ecg_ray encoder ({why}; {_EXPORT_HINT})")


def _describe_foreign(head: bytes) -> str:
    for magic, what in _FOREIGN:
        if head.startswith(magic):
            return what
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "an unknown binary format"


def _first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of torch's message: what is wrong, without the advice that follows it."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    line = line.split(". ", 1)[0].rstrip(".")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _weights_only_reason(exc: Exception) -> str:
    """The unpickler's own reason, without torch's advice around it."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    return _first_sentence(text.split(marker, 1)[1] if marker in text else text)


def _torch_archive(data: bytes) -> bool:
    """False for a readable zip archive that torch.save did not write; True otherwise (a damaged
    archive is left to torch.load, whose error then says it is truncated or corrupt)."""
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        return True
    return any(name.endswith("/data.pkl") for name in names)


def read_encoder_file(path: str, map_location="cpu") -> dict[str, Any]:
    """The dict written by ``ecg-ray export`` (format, encoder name, state_dict, ...), loaded weights-only.

    A safetensors export folder (``--format safetensors``) gives the same dict, its weights checked
    against its architecture (:func:`ecg_ray.portable.folder.read_portable_payload`). Anything else
    raises one CheckpointError that says what the file is instead.
    """
    from ecg_ray.portable.folder import is_portable_export, read_portable_payload

    if is_portable_export(path):
        return read_portable_payload(path, map_location)
    if not storage.is_file(path):
        if storage.is_dir(path):
            raise CheckpointError(f"{path} is a directory, not an encoder file (for a pretraining run directory "
                                  "use --pretrained RUN_DIR)")
        raise CheckpointError(f"{path}: encoder file not found")
    data = storage.read_bytes(path)
    if not data:
        raise _not_encoder(path, "the file is empty")
    if not (data.startswith(_TORCH_ZIP) or data.startswith(_TORCH_LEGACY)):
        raise _not_encoder(path, f"not a file written by torch.save: {_describe_foreign(data[:16])}")
    if data.startswith(_TORCH_ZIP) and not _torch_archive(data):
        raise _not_encoder(path, "a zip archive without the data.pkl that torch.save writes")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _not_encoder(path, "a torch file holding Python objects that weights-only loading refuses: "
                                 f"{_weights_only_reason(exc)}") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/KeyError/... for damaged archives
        raise CheckpointError(f"{path}: cannot load encoder, the file is truncated or corrupt "
                              f"({type(exc).__name__}: {_first_sentence(str(exc))})") from None
    if not isinstance(payload, dict):
        raise _not_encoder(path, f"a torch file holding a {type(payload).__name__}")
    found = payload.get("format")
    if found == CHECKPOINT_FORMAT:
        raise _not_encoder(path, "it is a training checkpoint; pass its run with --pretrained RUN_DIR, or export it")
    if found != ENCODER_FORMAT or not isinstance(payload.get("state_dict"), dict) or "encoder" not in payload:
        raise _not_encoder(path, f"a torch file of format {found!r}, not {ENCODER_FORMAT!r}")
    return payload
