"""Downstream training and evaluation on Ray Train: linear probe, fine-tuning, supervised baseline.

The paper's protocol: train on random 2.5 s crops of the training folds with multi-label BCE,
select the epoch by the validation folds' macro AUC, then score the test folds with sliding
windows (250, stride 125) whose sigmoid outputs are averaged per record. Linear evaluation
freezes the encoder and keeps its BatchNorm in eval mode; fine-tuning can train the head alone
first and then all layers with discriminative learning rates; supervised trains the same network
from random initialisation (the baseline every comparison needs).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecg_ray.config import Config, to_dict
from ecg_ray.data.sampling import split_too_short, stratified_subset
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import cut, select_records, train_crops, window_starts
from ecg_ray.errors import ConfigError

MODES = ("linear", "finetune", "supervised")
EVALUATION_FILE = "evaluation.json"


class Classifier(nn.Module):
    """Encoder + head; in linear mode the encoder stays frozen and in eval mode."""

    def __init__(self, encoder: nn.Module, head: nn.Module, freeze_encoder: bool):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            for p in encoder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # frozen BN statistics: the linear protocol
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def pretraining_method(config: Config) -> str | None:
    """The self-supervised method behind eval.encoder / eval.pretrained (None for random init)."""
    from ecg_ray.train.checkpoint import latest_checkpoint, load_encoder_payload, load_state

    if config.eval.encoder:
        return load_encoder_payload(config.eval.encoder).get("method")
    if config.eval.pretrained:
        return load_state(latest_checkpoint(config.eval.pretrained))["config"]["method"]["name"]
    return None


def load_encoder_weights(config: Config, map_location="cpu") -> tuple[str, dict | None]:
    """(encoder name, state dict or None) from eval.encoder (exported file) or eval.pretrained (run dir)."""
    from ecg_ray.train.checkpoint import latest_checkpoint, load_encoder_payload, load_state

    if config.eval.encoder and config.eval.pretrained:
        raise ConfigError("eval.encoder and eval.pretrained are exclusive; give one")
    if config.eval.encoder:
        payload = load_encoder_payload(config.eval.encoder, map_location)
        return payload["encoder"], payload["state_dict"]
    if config.eval.pretrained:
        state = load_state(latest_checkpoint(config.eval.pretrained), map_location=map_location)
        prefix = "encoder."
        weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
        return state["config"]["model"]["encoder"], weights
    return config.model.encoder, None


def build_classifier(config: Config, n_labels: int, map_location="cpu") -> Classifier:
    from ecg_ray.models import build_encoder, build_head

    mode = config.eval.mode
    if mode not in MODES:
        raise ConfigError(f"eval.mode: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    name, weights = load_encoder_weights(config, map_location)
    if mode == "supervised" and weights is not None:
        raise ConfigError("eval.mode=supervised trains from random initialisation; drop --encoder/--pretrained")
    encoder = build_encoder(name)
    if weights is not None:
        encoder.load_state_dict(weights)
    kind = config.eval.head
    if kind == "auto":
        kind = "mlp" if (name == "cpc_4fc2lstm" and mode != "linear") else "linear"
    head = build_head(kind, encoder.feature_dim, n_labels)
    classifier = Classifier(encoder, head, freeze_encoder=mode == "linear")
    classifier.encoder_name = name
    return classifier


def parameter_groups(model: Classifier, config: Config) -> list[dict[str, Any]]:
    """Head at optim.lr; encoder at lr x factor (the CPC encoder's per-step layers at x factor^2)."""
    from ecg_ray.optim import parameter_groups as decay_groups

    lr, factor, wd = config.optim.lr, config.eval.discriminative_lr_factor, config.optim.weight_decay
    groups = [{**g, "lr": lr} for g in decay_groups(model.head, wd)]
    if model.freeze_encoder:
        return groups
    encoder = model.encoder
    if hasattr(encoder, "lstm") and hasattr(encoder, "encoder") and factor != 1.0:
        parts = [(encoder.lstm, lr * factor), (encoder.encoder, lr * factor * factor)]
        seen = {id(p) for m, _ in parts for p in m.parameters()}
        rest = [p for p in encoder.parameters() if id(p) not in seen]
        for module, part_lr in parts:
            groups += [{**g, "lr": part_lr} for g in decay_groups(module, wd)]
        if rest:
            groups.append({"params": rest, "lr": lr * factor, "weight_decay": wd})
    else:
        groups += [{**g, "lr": lr * factor} for g in decay_groups(encoder, wd)]
    return groups


def labelled(store: EcgStore, indices: np.ndarray, label_set: str) -> np.ndarray:
    """Records with at least one positive in the label set (the paper drops unlabelled records)."""
    labels = store.label_matrix(label_set)[indices]
    return indices[labels.sum(1) > 0]


@torch.no_grad()
def predict_records(model: nn.Module, store: EcgStore, indices: np.ndarray, *, window: int, stride: int,
                    device, noise: tuple[str, float] | None = None, noise_seed: int = 0, mains_hz: float = 50.0,
                    batch_windows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid outputs of sliding windows averaged per record -> (records, (n_records, L))."""
    from ecg_ray.evaluation.aggregate import average_per_record
    from ecg_ray.evaluation.noise import add_noise, record_power

    model.eval()
    records, outputs = [], []
    chunk = max(1, batch_windows // 8)
    for start in range(0, len(indices), chunk):
        windows, owners = [], []
        powers = {}
        for i in indices[start:start + chunk]:
            signal = store.signal(int(i))
            starts = window_starts(len(signal), window, stride)
            if len(starts) == 0:
                continue
            windows.append(cut(signal, starts, window))
            owners.append(np.full(len(starts), int(i)))
            if noise is not None:
                powers[int(i)] = record_power(signal)
        if not windows:
            continue
        x, owner = np.concatenate(windows), np.concatenate(owners)
        if noise is not None:
            x = add_noise(x, owner, powers, noise[0], noise[1], fs=store.fs, seed=noise_seed, mains=mains_hz)
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
          seed: int = 0) -> dict[str, Any]:
    from ecg_ray.evaluation.metrics import bootstrap_macro_auc_ci, macro_auc

    y = store.label_matrix(label_set)[records]
    result = macro_auc(y, probs)
    out = {"macro_auc": result.value, "labels_scored": result.labels_scored,
           "labels_skipped": result.labels_skipped,
           "per_label_auc": {name: (None if np.isnan(a) else a)
                             for name, a in zip(store.manifest["label_sets"][label_set], result.per_label,
                                                strict=True)}}
    if bootstrap:
        out["ci"] = list(bootstrap_macro_auc_ci(y, probs, n_boot=bootstrap, seed=seed))
    return out


def variant_name(config: Config) -> str:
    if config.eval.variant:
        return config.eval.variant
    if config.eval.mode == "supervised":
        return f"supervised {config.model.encoder}"
    source = "random init" if not (config.eval.encoder or config.eval.pretrained) else "pretrained"
    return f"{source} {config.eval.mode}"


def downstream_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train ``train_func`` for linear / finetune / supervised runs."""
    import ray.train
    import ray.train.torch

    from ecg_ray.optim import warmup_cosine
    from ecg_ray.train.checkpoint import save_checkpoint
    from ecg_ray.train.pretrain import worker_setup

    config, rank, world, device, store = worker_setup(loop_config)
    label_set = config.data.label_set
    n_labels = len(store.manifest["label_sets"][label_set])
    train_idx, val_idx, test_idx = splits(config, store)
    # A small label fraction can hold fewer records than one batch: shrink the batch, keep every record.
    per_worker = max(1, min(config.train.batch_size // world, len(train_idx) // world))
    steps = max(1, (len(train_idx) // world) // per_worker)
    if config.train.max_steps_per_epoch:
        steps = min(steps, config.train.max_steps_per_epoch)

    torch.manual_seed(config.seed)
    model = build_classifier(config, n_labels).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, config), lr=config.optim.lr,
                                  betas=tuple(config.optim.betas))
    scheduler = warmup_cosine(optimizer, int(round(config.optim.warmup_epochs * steps)), steps * config.train.epochs,
                              config.optim.min_lr_ratio, config.optim.schedule)
    wrapped = model if world == 1 else ray.train.torch.prepare_model(model)
    loss_fn = nn.BCEWithLogitsLoss()
    best_auc, best_epoch, best_state, history = -1.0, -1, None, []
    for epoch in range(config.train.epochs):
        head_only = config.eval.mode == "finetune" and epoch < config.eval.head_only_epochs
        for p in model.encoder.parameters():
            p.requires_grad_(not (head_only or model.freeze_encoder))
        model.train()
        if head_only:
            model.encoder.eval()
        dataset, _ = train_crops(store, train_idx, crop=config.data.crop, seed=config.seed, epoch=epoch,
                                 with_labels=True, label_set=label_set, shard_index=rank, num_shards=world,
                                 records_per_task=config.data.records_per_task, shuffle=config.data.shuffle,
                                 shuffle_block=config.data.shuffle_block)
        start, done, total = time.perf_counter(), 0, 0.0
        for batch in dataset.iter_torch_batches(batch_size=per_worker, drop_last=True, device=device):
            loss = loss_fn(wrapped(batch["signal"]), batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            done += 1
            if done >= steps:
                break
        metrics = {"epoch": epoch, "loss": total / max(1, done), "lr": float(scheduler.get_last_lr()[0]),
                   "samples_per_s": done * per_worker * world / (time.perf_counter() - start)}
        if rank == 0:
            records, probs = predict_records(model, store, val_idx, window=config.data.window,
                                             stride=config.data.stride, device=device)
            val = score(store, records, probs, label_set)
            metrics["val_macro_auc"] = val["macro_auc"]
            if val["macro_auc"] > best_auc:  # model selection by validation macro AUC
                best_auc, best_epoch = val["macro_auc"], epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        history.append(metrics)
        if epoch < config.train.epochs - 1:
            ray.train.report(metrics)
    # Final report: best model on the test folds (+ noise grid), with a checkpoint carrying it.
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        final = dict(history[-1])
        if rank == 0:
            model.load_state_dict(best_state)
            evaluation = test_evaluation(config, model, store, test_idx, device)
            evaluation.update({"val_macro_auc": best_auc, "best_epoch": best_epoch, "batch_size": per_worker * world,
                               "history": history, "train_records": int(len(train_idx)),
                               "val_records": int(len(val_idx))})
            final.update({"val_macro_auc_best": best_auc, "best_epoch": best_epoch,
                          "test_macro_auc": evaluation["test_macro_auc"],
                          "test_macro_auc_ci_low": evaluation["test_macro_auc_ci"][0],
                          "test_macro_auc_ci_high": evaluation["test_macro_auc_ci"][1],
                          "labels_scored": evaluation["labels_scored"]})
            state = {"model": model.state_dict(), "epoch": best_epoch, "config": to_dict(config), "fs": store.fs,
                     "optimizer": {}, "scheduler": {}, "scaler": {}, "method_state": {},
                     "torch_rng": torch.get_rng_state()}
            save_checkpoint(tmp, state, history)
            (Path(tmp) / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=1))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(final, checkpoint=checkpoint)


def splits(config: Config, store: EcgStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled train (with label fraction), validation and test records."""
    data = config.data
    if not (data.train_folds and data.val_folds and data.test_folds):
        raise ConfigError("evaluation needs data.train_folds, data.val_folds and data.test_folds "
                          "(PTB-XL: 1-8, 9, 10)")
    train = select_records(store, folds=data.train_folds, datasets=data.datasets, label_set=data.label_set,
                           seed=data.seed)
    train = labelled(store, train, data.label_set)
    # Records shorter than the training crop cannot be cut: leave them out before steps are planned.
    train = split_too_short(store, train, data.crop)[0]
    if data.label_fraction < 1.0:
        keep = stratified_subset(store.label_matrix(data.label_set)[train], data.label_fraction, data.seed)
        train = np.sort(train[keep])
    val = labelled(store, select_records(store, folds=data.val_folds, datasets=data.datasets), data.label_set)
    test = labelled(store, select_records(store, folds=data.test_folds, datasets=data.datasets), data.label_set)
    for name, part in (("training", train), ("validation", val), ("test", test)):
        if len(part) == 0:
            raise ConfigError(f"no labelled {name} records in {store.path} for the configured folds")
    return train, val, test


def test_evaluation(config: Config, model: nn.Module, store: EcgStore, test_idx: np.ndarray, device) -> dict:
    """Clean test macro AUC with bootstrap CI and per-label AUCs, then every (noise type, SNR)."""
    label_set = config.data.label_set
    records, probs = predict_records(model, store, test_idx, window=config.data.window, stride=config.data.stride,
                                     device=device)
    clean = score(store, records, probs, label_set, bootstrap=config.eval.bootstrap, seed=config.seed)
    robustness = []
    for kind in config.noise.types:
        for snr in config.noise.snr_db:
            r, p = predict_records(model, store, test_idx, window=config.data.window, stride=config.data.stride,
                                   device=device, noise=(kind, float(snr)), noise_seed=config.noise.seed,
                                   mains_hz=config.noise.mains_hz)
            noisy = score(store, r, p, label_set)
            robustness.append({"noise_type": kind, "snr_db": float(snr), "test_macro_auc": noisy["macro_auc"],
                               "labels_scored": noisy["labels_scored"]})
    return {
        "mode": config.eval.mode,
        "variant": variant_name(config),
        "encoder": getattr(model, "encoder_name", config.model.encoder),
        "pretrained": config.eval.pretrained or config.eval.encoder or None,
        "method": pretraining_method(config),
        "label_set": label_set,
        "label_fraction": config.data.label_fraction,
        "test_macro_auc": clean["macro_auc"],
        "test_macro_auc_ci": clean.get("ci", [float("nan"), float("nan")]),
        "labels_scored": clean["labels_scored"],
        "labels_skipped": clean["labels_skipped"],
        "per_label_auc": clean["per_label_auc"],
        "test_records": int(len(records)),
        "robustness": robustness,
    }
