"""``encoder.embed(signal, fs=..., leads=[...])``: record embeddings from any recording, as evaluation makes them.

Each recording is prepared (:func:`ecg_ray.portable.prepare.prepare_signal`: leads by name,
``prepare``'s resampling filter, float32 mV), cut into the evaluation's sliding windows, run
through the encoder (eval mode, no grad, on the encoder's device) and the window features are
averaged per record (``pool="mean"``, as evaluation averages windows) or returned per window
(``pool="windows"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ecg_ray.errors import CheckpointError
from ecg_ray.models.registry import register_signal_embedder
from ecg_ray.portable.prepare import SignalError, as_array, prepare_signal, record_windows
from ecg_ray.portable.spec import POOL_CHOICES, InputSpec


def encoder_spec(encoder: torch.nn.Module) -> InputSpec:
    """The input spec :func:`ecg_ray.load_encoder` attached to ``encoder``; CheckpointError without one."""
    spec = getattr(encoder, "input_spec", None)
    if not isinstance(spec, InputSpec):
        raise CheckpointError(f"{type(encoder).__name__} has no input_spec (rate, leads, windows): load it with "
                              "ecg_ray.load_encoder(PATH), or set encoder.input_spec = ecg_ray.portable.InputSpec(...)")
    return spec


def _device(encoder: torch.nn.Module) -> torch.device:
    tensor = next(encoder.parameters(), None)
    if tensor is None:
        tensor = next(encoder.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@torch.no_grad()
def _window_features(encoder: torch.nn.Module, windows: np.ndarray, batch_windows: int) -> np.ndarray:
    device = _device(encoder)
    outputs = [encoder(torch.from_numpy(windows[k:k + batch_windows]).to(device)).float().cpu()
               for k in range(0, len(windows), batch_windows)]
    return torch.cat(outputs).numpy()


def embed_signal(encoder: torch.nn.Module, signal, *, fs: float, leads: Sequence[str] | None = None,
                 pool: str = "mean", missing_leads: str | None = None, batch_windows: int = 256) -> np.ndarray:
    """Embeddings of one recording (time, leads) or a batch (records, time, leads), float32 numpy.

    Returns (feature_dim,) for one recording, (records, feature_dim) for a batch with
    ``pool="mean"``; with ``pool="windows"``, (windows, feature_dim) or (records, windows,
    feature_dim) (every record of a batch has the same length, hence the same windows). See
    :meth:`ecg_ray.models.Encoder.embed` for the arguments.
    """
    if pool not in POOL_CHOICES:
        raise SignalError(f"pool must be one of {', '.join(POOL_CHOICES)}, got {pool!r}")
    if int(batch_windows) < 1:
        raise SignalError(f"batch_windows must be >= 1, got {batch_windows}")
    spec = encoder_spec(encoder)
    array = as_array(signal)
    batched = array.ndim == 3
    if array.ndim not in (2, 3):
        raise SignalError(f"signal must be (time, leads) or (records, time, leads), got shape {tuple(array.shape)}")
    records = list(array) if batched else [array]
    windows = [record_windows(prepare_signal(r, fs, leads, spec, missing_leads=missing_leads), spec) for r in records]
    counts = [len(w) for w in windows]
    was_training = encoder.training
    encoder.eval()
    try:
        features = _window_features(encoder, np.concatenate(windows), int(batch_windows))
    finally:
        encoder.train(was_training)
    per_record = np.split(features, np.cumsum(counts)[:-1])
    if pool == "mean":
        out = np.stack([f.mean(axis=0) for f in per_record])
    else:
        out = np.stack(per_record)
    out = out.astype(np.float32, copy=False)
    return out if batched else out[0]


register_signal_embedder(embed_signal)  # what Encoder.embed runs
