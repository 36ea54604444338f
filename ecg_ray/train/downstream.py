"""Downstream training and evaluation on Ray Train: linear probe, fine-tuning, supervised baseline.

The paper's protocol: train on random 2.5 s crops of the training folds with multi-label BCE,
select the epoch by the validation folds' macro AUC, then score the test folds with sliding
windows (250, stride 125) whose sigmoid outputs are averaged per record. Linear evaluation
freezes the encoder and keeps its BatchNorm in eval mode; fine-tuning can train the head alone
first and then all layers with discriminative learning rates (:func:`plan_phases`: the second phase
restarts from the first phase's best epoch with a new optimizer, and selection runs within it);
supervised trains the same network from random initialisation (the baseline every comparison needs).
The network and its learning rates are in :mod:`ecg_ray.train.classifier`, test scoring in
:mod:`ecg_ray.evaluation.scoring`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecg_ray.config import Config, to_dict
from ecg_ray.data.sampling import split_too_short, stratified_subset
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import select_records, train_crops
from ecg_ray.errors import ConfigError
from ecg_ray.evaluation.predictions import PREDICTIONS_FILE, Predictions, save_predictions
from ecg_ray.evaluation.scoring import predict_records, score
from ecg_ray.train.classifier import (  # noqa: F401  (re-exported for ecg_ray.train.trainer)
    MODES,
    build_classifier,
    init_head_bias,
    load_encoder_weights,
    parameter_groups,
    pretraining_method,
)

EVALUATION_FILE = "evaluation.json"


def labelled(store: EcgStore, indices: np.ndarray, label_set: str) -> np.ndarray:
    """Records with at least one positive in the label set (the paper drops unlabelled records)."""
    labels = store.label_matrix(label_set)[indices]
    return indices[labels.sum(1) > 0]


def variant_name(config: Config) -> str:
    if config.eval.variant:
        return config.eval.variant
    if config.eval.mode == "supervised":
        return f"supervised {config.model.encoder}"
    source = "random init" if not (config.eval.encoder or config.eval.pretrained) else "pretrained"
    return f"{source} {config.eval.mode}"


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with one optimizer: which parameters train and at what base lr."""

    name: str
    first_epoch: int
    epochs: int
    train_encoder: bool
    lr: float


def plan_phases(config: Config) -> list[Phase]:
    """One phase, or for fine-tuning with ``eval.head_only_epochs`` the head alone, then all layers.

    As in the reference (``--l_epochs`` then ``--f_epochs``): the all-layers phase restarts from the
    best head-only epoch with a new optimizer at ``eval.finetune_lr``, and the model is selected
    among the all-layers epochs only.
    """
    e, total = config.eval, config.train.epochs
    if e.mode == "finetune" and e.head_only_epochs > 0:
        if e.head_only_epochs >= total:
            raise ConfigError(f"eval.head_only_epochs={e.head_only_epochs} leaves no epoch of train.epochs={total} "
                              "to train all layers; train.epochs counts both phases")
        lr = config.optim.lr if e.finetune_lr is None else e.finetune_lr
        return [Phase("head_only", 0, e.head_only_epochs, False, config.optim.lr),
                Phase("all_layers", e.head_only_epochs, total - e.head_only_epochs, True, lr)]
    return [Phase(e.mode, 0, total, e.mode != "linear", config.optim.lr)]


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state on the CPU (the kept best epoch must not follow later steps)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _train_epoch(wrapped, dataset, optimizer, scheduler, loss_fn, per_worker: int, steps: int, device,
                 autocast, scaler) -> tuple[float, int]:
    """(summed loss, steps) of one epoch in ``train.precision``; the loss is read back once, at the end."""
    total, done = torch.zeros((), device=device), 0
    for batch in dataset.iter_torch_batches(batch_size=per_worker, drop_last=True, device=device,
                                            pin_memory=device.type == "cuda"):
        with autocast():
            logits = wrapped(batch["signal"])
        loss = loss_fn(logits.float(), batch["labels"].float())  # the loss itself in fp32
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        total += loss.detach()
        done += 1
        if done >= steps:
            break
    return float(total), done


def downstream_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train ``train_func`` for linear / finetune / supervised runs."""
    import ray.train
    import ray.train.torch

    from ecg_ray.optim import warmup_cosine
    from ecg_ray.train.checkpoint import save_checkpoint
    from ecg_ray.train.pretrain import worker_setup
    from ecg_ray.train.step import check_epoch_loss, precision_context

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
    model = build_classifier(config, n_labels)
    if config.eval.head_bias_init == "prior":
        init_head_bias(model, store.label_matrix(label_set)[train_idx])
    model = model.to(device)
    loss_fn = nn.BCEWithLogitsLoss()
    autocast, scaler = precision_context(config.train.precision, device)  # one scaler for both phases
    history: list[dict[str, Any]] = []
    phases = plan_phases(config)
    phase_summaries = []
    best_auc, best_epoch, best_state = -1.0, -1, None
    for phase in phases:
        if best_state is not None:
            # Restart from the previous phase's best epoch (rank 0 holds it; wrapping below broadcasts it).
            model.load_state_dict(best_state)
        best_auc, best_epoch, best_state = -1.0, -1, None  # selection within this phase only
        # Freeze/unfreeze BEFORE wrapping: DDP registers the parameters that require gradients at
        # construction, so each phase gets its own wrapper.
        model.set_encoder_trainable(phase.train_encoder)
        wrapped = model if world == 1 else ray.train.torch.prepare_model(model)
        optimizer = torch.optim.AdamW(parameter_groups(model, config, lr=phase.lr), lr=phase.lr,
                                      betas=tuple(config.optim.betas))
        scheduler = warmup_cosine(optimizer, int(round(config.optim.warmup_epochs * steps)), steps * phase.epochs,
                                  config.optim.min_lr_ratio, config.optim.schedule)
        for epoch in range(phase.first_epoch, phase.first_epoch + phase.epochs):
            model.train()
            dataset, _ = train_crops(store, train_idx, crop=config.data.crop, seed=config.seed, epoch=epoch,
                                     with_labels=True, label_set=label_set, shard_index=rank, num_shards=world,
                                     records_per_task=config.data.records_per_task, shuffle=config.data.shuffle,
                                     shuffle_block=config.data.shuffle_block)
            start = time.perf_counter()
            total, done = _train_epoch(wrapped, dataset, optimizer, scheduler, loss_fn, per_worker, steps, device,
                                       autocast, scaler)
            check_epoch_loss(total / max(1, done), epoch)
            metrics = {"epoch": epoch, "phase": phase.name, "loss": total / max(1, done),
                       "lr": float(scheduler.get_last_lr()[0]),
                       "samples_per_s": done * per_worker * world / (time.perf_counter() - start)}
            if rank == 0:
                records, probs = predict_records(model, store, val_idx, window=config.data.window,
                                                 stride=config.data.stride, device=device)
                val = score(store, records, probs, label_set)
                metrics["val_macro_auc"] = val["macro_auc"]
                if val["macro_auc"] > best_auc:  # model selection by validation macro AUC
                    best_auc, best_epoch = val["macro_auc"], epoch
                    best_state = _cpu_state(model)
            history.append(metrics)
            if epoch < config.train.epochs - 1:
                ray.train.report(metrics)
        if rank == 0 and best_state is None:  # no scorable validation label: keep the phase's last epoch
            best_auc, best_epoch = float("nan"), phase.first_epoch + phase.epochs - 1
            best_state = _cpu_state(model)
        phase_summaries.append({"phase": phase.name, "first_epoch": phase.first_epoch, "epochs": phase.epochs,
                                "lr": phase.lr, "train_encoder": phase.train_encoder,
                                "best_epoch": best_epoch, "val_macro_auc": best_auc})
        del wrapped  # drop this phase's DDP wrapper (and its gradient hooks) before the next one
    # Final report: the last phase's best model on the test folds (+ noise grid), with a checkpoint carrying it.
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        final = dict(history[-1])
        if rank == 0:
            model.load_state_dict(best_state)
            evaluation, predictions = test_evaluation(config, model, store, test_idx, device)
            evaluation.update({"val_macro_auc": best_auc, "best_epoch": best_epoch, "batch_size": per_worker * world,
                               "phases": phase_summaries, "history": history,
                               "train_records": int(len(train_idx)), "val_records": int(len(val_idx))})
            final.update({"val_macro_auc_best": best_auc, "best_epoch": best_epoch,
                          "test_macro_auc": evaluation["test_macro_auc"],
                          "test_macro_auc_reference": evaluation["test_macro_auc_reference"],
                          "test_macro_auc_ci_low": evaluation["test_macro_auc_ci"][0],
                          "test_macro_auc_ci_high": evaluation["test_macro_auc_ci"][1],
                          "labels_scored": evaluation["labels_scored"]})
            state = {"model": model.state_dict(), "epoch": best_epoch, "config": to_dict(config), "fs": store.fs,
                     "optimizer": {}, "scheduler": {}, "scaler": {}, "method_state": {},
                     "torch_rng": torch.get_rng_state()}
            save_checkpoint(tmp, state, history)
            (Path(tmp) / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=1))
            save_predictions(Path(tmp) / PREDICTIONS_FILE, predictions)
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


def test_evaluation(config: Config, model: nn.Module, store: EcgStore, test_idx: np.ndarray,
                    device) -> tuple[dict, Predictions]:
    """Clean test macro AUC (both scales, bootstrap CIs, per-label AUCs), then every (noise type, SNR).

    Returns the evaluation summary and the per-record test predictions that ``ecg-ray compare``
    pairs between runs.
    """
    label_set = config.data.label_set
    min_positives = config.eval.min_test_positives
    records, probs = predict_records(model, store, test_idx, window=config.data.window, stride=config.data.stride,
                                     device=device)
    clean = score(store, records, probs, label_set, bootstrap=config.eval.bootstrap, seed=config.seed,
                  min_test_positives=min_positives)
    robustness = []
    for kind in config.noise.types:
        for snr in config.noise.snr_db:
            r, p = predict_records(model, store, test_idx, window=config.data.window, stride=config.data.stride,
                                   device=device, noise=(kind, float(snr)), noise_seed=config.noise.seed,
                                   mains_hz=config.noise.mains_hz)
            noisy = score(store, r, p, label_set, min_test_positives=min_positives)
            robustness.append({"noise_type": kind, "snr_db": float(snr), "test_macro_auc": noisy["macro_auc"],
                               "test_macro_auc_reference": noisy["macro_auc_reference"],
                               "labels_scored": noisy["labels_scored"]})
    names = list(store.manifest["label_sets"][label_set])
    table = store.records.iloc[records]
    predictions = Predictions(record_ids=table["id"].astype(str).to_numpy(), probs=probs.astype(np.float32),
                              labels=store.label_matrix(label_set)[records].astype(np.uint8), label_names=names,
                              label_set=label_set)
    nan2 = [float("nan"), float("nan")]
    evaluation = {
        "mode": config.eval.mode,
        "variant": variant_name(config),
        "encoder": getattr(model, "encoder_name", config.model.encoder),
        "pretrained": config.eval.pretrained or config.eval.encoder or None,
        "method": pretraining_method(config),
        "store": str(config.data.store),
        "test_datasets": {str(k): int(v) for k, v in table["dataset"].astype(str).value_counts().sort_index().items()},
        "train_folds": config.data.train_folds, "val_folds": config.data.val_folds,
        "test_folds": config.data.test_folds,
        "label_set": label_set,
        "n_labels": len(names),
        "label_fraction": config.data.label_fraction,
        "seed": config.seed,
        "test_macro_auc": clean["macro_auc"],
        "test_macro_auc_ci": clean.get("ci", nan2),
        "test_macro_auc_reference": clean["macro_auc_reference"],
        "test_macro_auc_reference_ci": clean.get("ci_reference", nan2),
        "test_macro_auc_ci_unscorable_share": clean.get("ci_unscorable_share"),
        "labels_scored": clean["labels_scored"],
        "labels_skipped": clean["labels_skipped"],
        "min_test_positives": min_positives,
        "labels_excluded": clean["labels_excluded"],
        "per_label_auc": clean["per_label_auc"],
        "test_records": int(len(records)),
        "predictions": PREDICTIONS_FILE,
        "robustness": robustness,
    }
    return evaluation, predictions
