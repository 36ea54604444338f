"""Test-time scoring of a downstream model: per-record predictions and macro AUC on two scales.

:func:`predict_records` runs sliding windows (250, stride 125 in the paper) over each record and
averages the sigmoid outputs per record. :func:`score` reports

* ``macro_auc`` (ours): the mean ROC-AUC over the labels that have at least ``min_test_positives``
  positives and one negative among the scored records; the other labels are listed, not scored;
* ``macro_auc_reference`` (the reference's scale): every label of the label set, a label without
  both classes counting 0.5, so that our numbers and the published ones compare like for like.

Bootstrap intervals resample records over a FIXED label set (the labels each scale scores on the
whole test fold), so every resample estimates the same quantity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ecg_ray.data.records import read_records
from ecg_ray.data.store import EcgStore
from ecg_ray.errors import ConfigError


@torch.no_grad()
def predict_records(model: nn.Module, store: EcgStore, indices: np.ndarray, *, window: int, stride: int,
                    device, noise: tuple[str, float] | None = None, noise_seed: int = 0, mains_hz: float = 50.0,
                    batch_windows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid outputs of sliding windows averaged per record -> (records, (n_records, L))."""
    from ecg_ray.data.windows import cut_windows
    from ecg_ray.evaluation.aggregate import average_per_record
    from ecg_ray.evaluation.noise import add_noise, record_power

    model.eval()
    records, outputs = [], []
    chunk = max(1, batch_windows // 8)
    for start in range(0, len(indices), chunk):
        block = indices[start:start + chunk]
        signals = read_records(store, block)
        windows = cut_windows(signals, block, window, stride)
        if not len(windows):
            continue
        x, owner = windows.signal, windows.record_index
        if noise is not None:
            powers = {int(i): record_power(signal) for i, signal in zip(block, signals, strict=True)
                      if len(signal) >= window}  # the records that have windows
            x = add_noise(x, owner, powers, noise[0], noise[1], fs=store.fs, seed=noise_seed, mains=mains_hz,
                          window_ordinal=windows.window_index)
        probs = torch.cat([torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x[k:k + batch_windows],
                                                                                      dtype=np.float32)).to(device)).float()).cpu()
                           for k in range(0, len(x), batch_windows)]).numpy()
        ids, mean = average_per_record(owner, probs)
        records.append(ids)
        outputs.append(mean)
    if not records:
        raise ConfigError(f"no record of at least {window} samples to evaluate")
    return np.concatenate(records), np.concatenate(outputs)


def score(store: EcgStore, records: np.ndarray, probs: np.ndarray, label_set: str, bootstrap: int = 0,
          seed: int = 0, min_test_positives: int = 1) -> dict[str, Any]:
    """Macro AUC on both scales, per-label AUCs and (``bootstrap`` > 0) percentile intervals."""
    from ecg_ray.evaluation.metrics import (
        bootstrap_label_aucs,
        macro_auc,
        macro_auc_reference,
        macro_from_label_aucs,
        percentile_interval,
        scorable_labels,
    )

    names = list(store.manifest["label_sets"][label_set])
    y = store.label_matrix(label_set)[records]
    keep = scorable_labels(y, min_positives=min_test_positives)
    per_label = np.asarray(macro_auc(y, probs).per_label)
    positives = y.sum(0)
    out = {"macro_auc": float(per_label[keep].mean()) if keep.any() else float("nan"),
           "macro_auc_reference": macro_auc_reference(y, probs),
           "labels_scored": int(keep.sum()), "labels_skipped": int(len(names) - keep.sum()),
           "min_test_positives": int(min_test_positives),
           "labels_excluded": [{"label": name, "test_positives": int(positives[j])}
                               for j, name in enumerate(names) if not keep[j]],
           "per_label_auc": {name: (None if np.isnan(a) else float(a)) for name, a in zip(names, per_label, strict=True)}}
    if bootstrap:
        # One set of per-label resampled AUCs serves both fixed label sets: ours = the labels scored on
        # the whole fold, the reference's = every label; a label that loses a class in a resample
        # counts 0.5 (rare: see ecg_ray.evaluation.metrics).
        label_aucs = bootstrap_label_aucs(y, probs, n_boot=bootstrap, seed=seed)
        ours = percentile_interval(macro_from_label_aucs(label_aucs[:, keep], unscorable=0.5))
        ref = percentile_interval(macro_from_label_aucs(label_aucs, unscorable=0.5))
        out["ci"], out["ci_reference"] = [ours.low, ours.high], [ref.low, ref.high]
        out["ci_unscorable_share"] = ours.unscorable_share
    return out


def scored_test_fields(clean: dict[str, Any], min_test_positives: int) -> dict[str, Any]:
    """The test-fold keys of every ``evaluation.json`` (trained modes and embedding probes alike), from
    :func:`score`'s result: both macro AUC scales, their intervals (NaN without a bootstrap), the labels."""
    nan2 = [float("nan"), float("nan")]
    return {
        "test_macro_auc": clean["macro_auc"],
        "test_macro_auc_ci": clean.get("ci", nan2),
        "test_macro_auc_reference": clean["macro_auc_reference"],
        "test_macro_auc_reference_ci": clean.get("ci_reference", nan2),
        "test_macro_auc_ci_unscorable_share": clean.get("ci_unscorable_share"),
        "labels_scored": clean["labels_scored"],
        "labels_skipped": clean["labels_skipped"],
        "min_test_positives": min_test_positives,
        "labels_excluded": clean["labels_excluded"],
        "per_label_auc": clean["per_label_auc"],
    }
