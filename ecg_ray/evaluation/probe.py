"""Online linear probe: a quick, comparable signal of representation quality during pretraining.

Features of frozen-encoder crops from the training folds fit a multi-label logistic regression
(full-batch L-BFGS on standardised features, a few seconds on CPU); its macro AUC on the
validation folds (window outputs averaged per record, as in the paper's protocol) is the metric
Tune optimises. Deliberately small: at most ``max_records`` records per side. The records and
crops are the same every epoch (a fixed seed), so their windows are read from the store once per
run and kept in memory: ``max_records`` x (1 crop + ~7 windows of 2.5 s at 100 Hz) x 12 kB, about
190 MB at the default 2,000 records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ecg_ray.data.cutting import cut
from ecg_ray.data.records import read_records
from ecg_ray.data.store import EcgStore
from ecg_ray.data.windows import cut_windows
from ecg_ray.evaluation.aggregate import average_per_record
from ecg_ray.evaluation.metrics import macro_auc


def _random_crops(store: EcgStore, indices: np.ndarray, window: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random crop per record of at least ``window`` samples, with the record each came from."""
    signals, owners = [], []
    for i, record in zip(indices, read_records(store, indices), strict=True):
        if len(record) < window:
            continue
        signals.append(cut(record, rng.integers(0, len(record) - window + 1, size=1), window))
        owners.append(np.full(1, i))
    return np.concatenate(signals), np.concatenate(owners)


@dataclass(frozen=True)
class ProbeWindows:
    """The probe's inputs: one random crop per training record, all sliding windows per validation record."""

    x_train: np.ndarray
    own_train: np.ndarray
    x_val: np.ndarray
    own_val: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x_train, self.own_train, self.x_val, self.own_val))


#: the windows of the last probe in this process: the probe runs on the same records with the same
#: seed every epoch, so they are read from the store once per run (one entry bounds the memory).
_CACHE: dict[tuple, ProbeWindows] = {}


def probe_windows(store: EcgStore, train_idx: np.ndarray, val_idx: np.ndarray, *, window: int, stride: int,
                  max_records: int, seed: int) -> ProbeWindows:
    """The probe's windows for these records and settings, read once per process and then reused."""
    digest = hashlib.sha256(np.ascontiguousarray(train_idx, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(val_idx, dtype=np.int64).tobytes())
    key = (store.path, store.version, digest.hexdigest(), window, stride, max_records, seed)
    if key not in _CACHE:
        _CACHE.clear()
        rng = np.random.default_rng(seed)
        if len(train_idx) > max_records:
            train_idx = np.sort(rng.choice(train_idx, max_records, replace=False))
        if len(val_idx) > max_records:
            val_idx = np.sort(rng.choice(val_idx, max_records, replace=False))
        x_train, own_train = _random_crops(store, train_idx, window, rng)
        # the validation records are scored as evaluation scores them: all sliding windows, averaged
        val = cut_windows(read_records(store, val_idx), val_idx, window, stride)
        _CACHE[key] = ProbeWindows(x_train, own_train, val.signal, val.record_index)
    return _CACHE[key]


@torch.no_grad()
def _features(encoder: torch.nn.Module, x: np.ndarray, device, batch: int = 512) -> torch.Tensor:
    out = [encoder(torch.from_numpy(x[k:k + batch]).to(device)).float().cpu() for k in range(0, len(x), batch)]
    return torch.cat(out)


def linear_probe_auc(encoder: torch.nn.Module, store: EcgStore, train_idx: np.ndarray, val_idx: np.ndarray,
                     *, label_set: str = "all", window: int = 250, stride: int = 125, max_records: int = 2000,
                     seed: int = 0, device="cpu", l2: float = 1e-3) -> dict[str, float]:
    """Fit a linear probe on train crops, return validation macro AUC and labels scored.

    The windows come from :func:`probe_windows` (read from the store on the first call only).
    """
    windows = probe_windows(store, train_idx, val_idx, window=window, stride=stride, max_records=max_records,
                            seed=seed)
    own_train, own_val = windows.own_train, windows.own_val
    labels = store.label_matrix(label_set).astype(np.float32)
    was_training = encoder.training
    encoder.eval()
    try:
        f_train = _features(encoder, windows.x_train, device)
        f_val = _features(encoder, windows.x_val, device)
    finally:
        encoder.train(was_training)
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    f_train, f_val = (f_train - mean) / std, (f_val - mean) / std
    y_train = torch.from_numpy(labels[own_train])
    keep = y_train.sum(0) > 0  # labels without a training positive cannot be learned
    weight = torch.zeros(f_train.shape[1], int(keep.sum()), requires_grad=True)
    bias = torch.zeros(int(keep.sum()), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = f_train @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_train[:, keep])
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        prob = torch.sigmoid(f_val @ weight + bias).numpy()
    records, per_record = average_per_record(own_val, prob)
    result = macro_auc(labels[records][:, keep.numpy()], per_record)
    return {"val_macro_auc": result.value, "val_labels_scored": result.labels_scored}
