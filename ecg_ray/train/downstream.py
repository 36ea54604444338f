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

Two data settings change what the model is shown, everywhere in a run:

* ``data.leads`` (a lead subset): :func:`restrict_leads` zeroes the other leads of every batch
  the classifier receives, in one forward pre-hook: training crops, validation and test windows,
  the noisy test windows (noise is added to the recording first, then the missing leads are
  zeroed, as on a recorder without those leads) and whole records.
* ``data.window: 0`` (whole records): validation and test score each record as one window
  (:func:`predict_whole_records`); training still uses ``data.crop`` crops.

Training runs through pretraining's machinery (:mod:`ecg_ray.train.step`): the same step function,
the optimizer ``optim.name`` builds (over the discriminative parameter groups), ``train.precision``,
the once-per-epoch finite-loss check on the mean over workers, and the checkpoint layout of
:func:`ecg_ray.train.checkpoint.training_state` (the selected epoch's model, optimizer, scheduler and
scaler states, and its ``best`` record).
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

from ecg_ray.config import Config
from ecg_ray.data.leads import kept_leads, lead_set_text, lead_subset, zero_missing_leads
from ecg_ray.data.records import read_records
from ecg_ray.data.sampling import split_too_short, stratified_subset
from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import select_records, train_crops
from ecg_ray.errors import ConfigError
from ecg_ray.evaluation.predictions import PREDICTIONS_FILE, Predictions, save_predictions
from ecg_ray.evaluation.scoring import predict_records, score, scored_test_fields
from ecg_ray.methods.registry import method_display
from ecg_ray.run_layout import EVALUATION_FILE
from ecg_ray.train.classifier import (  # noqa: F401  (re-exported for ecg_ray.train.trainer)
    MODES,
    MultiLabelObjective,
    build_classifier,
    init_head_bias,
    load_encoder_weights,
    parameter_groups,
    pretraining_method,
)
from ecg_ray.train.step import training_step


def labelled(store: EcgStore, indices: np.ndarray, label_set: str) -> np.ndarray:
    """Records with at least one positive in the label set (the paper drops unlabelled records)."""
    labels = store.label_matrix(label_set)[indices]
    return indices[labels.sum(1) > 0]


def variant_name(config: Config) -> str:
    """``eval.variant``, else derived: ``pretrained linear``, ``supervised xresnet1d50``, with the lead
    subset and whole-record scoring appended (``pretrained linear (leads I,II,V1; whole records)``)."""
    if config.eval.variant:
        return config.eval.variant
    if config.eval.mode == "supervised":
        name = f"supervised {config.model.encoder}"
    else:
        source = "random init" if not (config.eval.encoder or config.eval.pretrained) else "pretrained"
        name = f"{source} {config.eval.mode}"
    notes = []
    if lead_set_text(config.data.leads) != "all 12":
        notes.append(f"leads {lead_set_text(config.data.leads)}")
    if config.data.window == 0:
        notes.append("whole records")
    return f"{name} ({'; '.join(notes)})" if notes else name


def check_evaluation_data(config: Config) -> None:
    """``data.leads`` names and, for ``data.window: 0``, an encoder that accepts any input length.

    Every registered encoder does (the Encoder contract: T' = ceil(T / downsample); vit1d pads its
    last patch); an encoder that sets ``accepts_any_length = False`` is refused by name.
    """
    lead_subset(config.data.leads)
    if config.data.window == 0:
        from ecg_ray.models.registry import build_encoder

        with torch.device("meta"):  # no weights allocated: only the declaration is read
            encoder = build_encoder(config.model.encoder)
        if not encoder.accepts_any_length:
            raise ConfigError(f"data.window=0 (whole records): encoder {config.model.encoder} does not accept "
                              f"inputs of any length; set data.window (e.g. {config.data.crop}) for sliding windows")


def check_pretraining_data(config: Config) -> None:
    """``data.leads`` and ``data.window: 0`` are evaluation settings: a pretraining run refuses them
    rather than ignore them."""
    if config.data.leads is not None:
        raise ConfigError("data.leads (a lead subset, the others zeroed) is for ecg-ray evaluate; to pretrain an "
                          "encoder for reduced lead sets, add {name: RandomLeadMask} to augmentations")
    if config.data.window == 0:
        raise ConfigError("data.window=0 (whole records) is for ecg-ray evaluate; pretraining's online probe "
                          "scores sliding windows: set data.window (e.g. 250)")


def restrict_leads(model: nn.Module, leads: list[str] | None) -> nn.Module:
    """Zero the leads not in ``leads`` in every input of ``model`` (a forward pre-hook; None: no change).

    The one place a lead subset is applied: whatever feeds the model (training crops, windows,
    noisy windows, whole records) passes through it, on the batch's device. A hook, not a wrapper
    module, so the model's state-dict keys (and its checkpoints) stay as they are.
    """
    kept = kept_leads(leads)
    if kept is None or kept.all():
        return model
    kept_on_device: dict[torch.device, torch.Tensor] = {}

    def zero_others(module, args):
        x = args[0]
        mask = kept_on_device.get(x.device)
        if mask is None:  # built once per device, not a host copy per batch
            mask = kept_on_device[x.device] = torch.from_numpy(kept).to(x.device)
        return (zero_missing_leads(x, mask), *args[1:])

    model.register_forward_pre_hook(zero_others)
    return model


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


def _cpu_copy(value):
    """A copy on the CPU of a state dict (nested dicts / lists of tensors and plain values): the kept
    best epoch must not follow later steps."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state on the CPU."""
    return _cpu_copy(model.state_dict())


def _train_epoch(objective: MultiLabelObjective, batches, optimizer, scheduler, steps: int, device, autocast,
                 scaler, global_step: int = 0) -> tuple[torch.Tensor, int]:
    """(summed loss on the device, steps taken) of one epoch through the shared step (``training_step``).

    ``batches`` yields dicts with ``signal`` and ``labels``; the loss is summed on the device and read
    back once per epoch by the caller (reading it each step would stall a GPU). ``global_step`` is the
    number of steps before this epoch.
    """
    total, done = torch.zeros((), device=device), 0
    for batch in batches:
        total += training_step(objective, objective, batch, optimizer, scheduler, autocast, scaler,
                               global_step + done + 1)
        done += 1
        if done >= steps:  # stop before fetching a batch that would not be used
            break
    return total, done


def downstream_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train ``train_func`` for linear / finetune / supervised runs."""
    import ray.train
    import ray.train.torch

    from ecg_ray.train.checkpoint import save_checkpoint, training_state
    from ecg_ray.train.pretrain import method_batches, worker_setup
    from ecg_ray.train.step import build_optimization, check_epoch_loss, epoch_means, precision_context

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
    model = restrict_leads(model.to(device), config.data.leads)
    autocast, scaler = precision_context(config.train.precision, device)  # one scaler for both phases
    history: list[dict[str, Any]] = []
    phases = plan_phases(config)
    phase_summaries = []
    best_auc, best_epoch, best_state = -1.0, -1, None
    best_training: dict[str, Any] = {}  # optimizer, scheduler and scaler states of the selected epoch
    global_step = 0
    for phase in phases:
        if best_state is not None:
            # Restart from the previous phase's best epoch (rank 0 holds it; wrapping below broadcasts it).
            model.load_state_dict(best_state)
        best_auc, best_epoch, best_state = -1.0, -1, None  # selection within this phase only
        # Freeze/unfreeze BEFORE wrapping: DDP registers the parameters that require gradients at
        # construction, so each phase gets its own wrapper.
        model.set_encoder_trainable(phase.train_encoder)
        wrapped = model if world == 1 else ray.train.torch.prepare_model(model)
        objective = MultiLabelObjective(wrapped)
        # optim.name over the discriminative groups (each with its lr), scheduled over this phase's epochs
        optimizer, scheduler = build_optimization(config, parameter_groups(model, config, lr=phase.lr), steps,
                                                  epochs=phase.epochs, lr=phase.lr)
        for epoch in range(phase.first_epoch, phase.first_epoch + phase.epochs):
            model.train()
            dataset, _ = train_crops(store, train_idx, crop=config.data.crop, seed=config.seed, epoch=epoch,
                                     with_labels=True, label_set=label_set, shard_index=rank, num_shards=world,
                                     records_per_task=config.data.records_per_task, shuffle=config.data.shuffle,
                                     shuffle_block=config.data.shuffle_block)
            start = time.perf_counter()
            batches = method_batches(dataset, per_worker, device, objective.batch_fields)
            total, done = _train_epoch(objective, batches, optimizer, scheduler, steps, device, autocast, scaler,
                                       global_step)
            global_step += done
            (mean_loss,) = epoch_means(total, done, world)  # the same on every worker: all stop together
            check_epoch_loss(mean_loss, epoch)
            metrics = {"epoch": epoch, "phase": phase.name, "loss": mean_loss,
                       "lr": float(scheduler.get_last_lr()[0]),
                       "samples_per_s": done * per_worker * world / (time.perf_counter() - start)}
            if rank == 0:
                records, probs = predict(config, model, store, val_idx, device)
                val = score(store, records, probs, label_set)
                metrics["val_macro_auc"] = val["macro_auc"]
                if val["macro_auc"] > best_auc:  # model selection by validation macro AUC
                    best_auc, best_epoch = val["macro_auc"], epoch
                    best_state = _cpu_state(model)
                    best_training = _training_states(optimizer, scheduler, scaler)
            history.append(metrics)
            if epoch < config.train.epochs - 1:
                ray.train.report(metrics)
        if rank == 0 and best_state is None:  # no scorable validation label: keep the phase's last epoch
            best_auc, best_epoch = float("nan"), phase.first_epoch + phase.epochs - 1
            best_state = _cpu_state(model)
            best_training = _training_states(optimizer, scheduler, scaler)
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
            # The checkpoint layout of pretraining: the selected epoch's model with its optimizer, scheduler
            # and scaler states, and its best record (what `ecg-ray export --best` reads).
            best = None
            if np.isfinite(best_auc):
                prefix = "encoder."
                best = {"epoch": best_epoch, "metric": "val_macro_auc", "value": float(best_auc),
                        "higher_is_better": True,
                        "encoder": {k[len(prefix):]: v for k, v in best_state.items() if k.startswith(prefix)}}
            state = training_state(config, store.fs, model=best_state, epoch=best_epoch, best=best, **best_training)
            save_checkpoint(tmp, state, history)
            (Path(tmp) / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=1))
            save_predictions(Path(tmp) / PREDICTIONS_FILE, predictions)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(final, checkpoint=checkpoint)


def _training_states(optimizer, scheduler, scaler) -> dict[str, Any]:
    """CPU copies of the optimizer, scheduler and grad scaler states (``training_state``'s keywords)."""
    return {"optimizer": _cpu_copy(optimizer.state_dict()), "scheduler": _cpu_copy(scheduler.state_dict()),
            "scaler": scaler.state_dict() if scaler is not None else None}


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


def predict(config: Config, model: nn.Module, store: EcgStore, indices: np.ndarray, device,
            noise: tuple[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-record sigmoid outputs by the run's windowing: sliding windows, or whole records (``data.window: 0``)."""
    settings = {"noise": noise, "noise_seed": config.noise.seed, "mains_hz": config.noise.mains_hz} if noise else {}
    if config.data.window == 0:
        return predict_whole_records(model, store, indices, min_length=config.data.crop, device=device, **settings)
    return predict_records(model, store, indices, window=config.data.window, stride=config.data.stride, device=device,
                           **settings)


@torch.no_grad()
def predict_whole_records(model: nn.Module, store: EcgStore, indices: np.ndarray, *, min_length: int, device,
                          noise: tuple[str, float] | None = None, noise_seed: int = 0, mains_hz: float = 50.0,
                          batch_samples: int = 256_000) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid outputs of each record scored whole, as one window -> (records, (n_records, L)), records sorted.

    Batches hold records of one length (:func:`ecg_ray.data.windows.whole_record_batches`, about
    ``batch_samples`` samples per lead each: 256 records of 10 s at 100 Hz, the sliding-window
    batch of 1024 x 250). Records shorter than ``min_length`` (the training crop) are left out,
    as sliding windows leave out records shorter than a window. Noise is drawn per record as
    window 0 of :func:`ecg_ray.evaluation.noise.add_noise`, at the SNR against the record's power.
    """
    from ecg_ray.data.windows import stack_whole_records, whole_record_batches
    from ecg_ray.evaluation.noise import add_noise, record_power

    model.eval()
    indices = np.asarray(indices, dtype=np.int64)
    lengths = store.column("length")[indices]
    long_enough = lengths >= min_length
    if not long_enough.any():
        raise ConfigError(f"no record of at least {min_length} samples (data.crop) to evaluate whole")
    records, outputs = [], []
    for batch in whole_record_batches(indices[long_enough], lengths[long_enough], batch_samples):
        signals = read_records(store, batch)
        x = stack_whole_records(signals, batch).signal
        if noise is not None:
            powers = {int(i): record_power(signal) for i, signal in zip(batch, signals, strict=True)}
            x = add_noise(x, batch, powers, noise[0], noise[1], fs=store.fs, seed=noise_seed, mains=mains_hz,
                          window_ordinal=np.zeros(len(batch), dtype=np.int64))
        logits = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device))
        records.append(batch)
        outputs.append(torch.sigmoid(logits.float()).cpu().numpy().astype(np.float64))
    records, outputs = np.concatenate(records), np.concatenate(outputs)
    order = np.argsort(records, kind="stable")
    return records[order], outputs[order]


def test_evaluation(config: Config, model: nn.Module, store: EcgStore, test_idx: np.ndarray,
                    device) -> tuple[dict, Predictions]:
    """Clean test macro AUC (both scales, bootstrap CIs, per-label AUCs), then every (noise type, SNR).

    Returns the evaluation summary and the per-record test predictions that ``ecg-ray compare``
    pairs between runs.
    """
    label_set = config.data.label_set
    min_positives = config.eval.min_test_positives
    records, probs = predict(config, model, store, test_idx, device)
    clean = score(store, records, probs, label_set, bootstrap=config.eval.bootstrap, seed=config.seed,
                  min_test_positives=min_positives)
    robustness = []
    for kind in config.noise.types:
        for snr in config.noise.snr_db:
            r, p = predict(config, model, store, test_idx, device, noise=(kind, float(snr)))
            noisy = score(store, r, p, label_set, min_test_positives=min_positives)
            robustness.append({"noise_type": kind, "snr_db": float(snr), "test_macro_auc": noisy["macro_auc"],
                               "test_macro_auc_reference": noisy["macro_auc_reference"],
                               "labels_scored": noisy["labels_scored"]})
    names = list(store.manifest["label_sets"][label_set])
    table = store.records.iloc[records]
    predictions = Predictions(record_ids=table["id"].astype(str).to_numpy(), probs=probs.astype(np.float32),
                              labels=store.label_matrix(label_set)[records].astype(np.uint8), label_names=names,
                              label_set=label_set)
    evaluation = {
        "mode": config.eval.mode,
        "variant": variant_name(config),
        "encoder": getattr(model, "encoder_name", config.model.encoder),
        "pretrained": config.eval.pretrained or config.eval.encoder or None,
        "method": (method := pretraining_method(config)),
        # the method's name as tables print it (the report runs without the registry: no torch there)
        "method_display": method_display(method),
        "store": str(config.data.store),
        "test_datasets": {str(k): int(v) for k, v in table["dataset"].astype(str).value_counts().sort_index().items()},
        "train_folds": config.data.train_folds, "val_folds": config.data.val_folds,
        "test_folds": config.data.test_folds,
        "label_set": label_set,
        "n_labels": len(names),
        "label_fraction": config.data.label_fraction,
        # the leads the model saw (the others zeroed) and how records were scored (window 0: whole records)
        "leads": list(lead_subset(config.data.leads) or CANONICAL_LEADS),
        "window": config.data.window,
        "stride": config.data.stride if config.data.window else None,
        "seed": config.seed,
        **scored_test_fields(clean, min_positives),
        "test_records": int(len(records)),
        "predictions": PREDICTIONS_FILE,
        "robustness": robustness,
    }
    return evaluation, predictions
