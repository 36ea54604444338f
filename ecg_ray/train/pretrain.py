"""The per-worker ``train_func`` of self-supervised pretraining (runs inside Ray Train workers).

Each worker streams its own equal shard of random crops (``ecg_ray.data.stream``), so every
worker takes the same number of optimizer steps; the global batch is the config's and the
per-worker batch is derived from it. Every epoch ends with one ``ray.train.report`` carrying
the loss, learning rate, throughput and a validation metric, plus a checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ecg_ray.config import Config, from_dict, to_dict
from ecg_ray.data.sampling import StorePart, split_too_short, too_short_summary
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import select_records, train_crops
from ecg_ray.errors import ConfigError


def worker_batch_size(config: Config, world: int) -> int:
    if config.train.max_workers and config.train.batch_size >= world:
        return config.train.batch_size // world  # elastic: the world size changes between restarts
    if config.train.batch_size % world:
        raise ConfigError(f"train.batch_size={config.train.batch_size} cannot be split evenly over "
                          f"{world} workers (train.workers); choose a multiple of {world}")
    return config.train.batch_size // world


def steps_per_epoch(config: Config, n_records: int, world: int) -> int:
    """Optimizer steps per epoch: every worker gets floor(N / world) records, drop_last batches."""
    per_worker = worker_batch_size(config, world)
    steps = (n_records // world) * config.data.crops_per_record // per_worker
    if config.train.max_steps_per_epoch is not None:
        steps = min(steps, config.train.max_steps_per_epoch)
    if steps < 1:
        raise ConfigError(f"train.batch_size={config.train.batch_size}: {n_records} training records over "
                          f"{world} worker(s) do not fill one batch of {per_worker}; lower train.batch_size")
    return steps


def store_locations(config: Config) -> list[str]:
    """The run's stores: data.store, or every data.stores path (the first is the primary store)."""
    if config.data.stores:
        if config.data.store:
            raise ConfigError("data.store and data.stores are exclusive: list every store under data.stores "
                              "(or repeat --store)")
        missing = [k for k, spec in enumerate(config.data.stores) if not spec.path]
        if missing:
            raise ConfigError(f"data.stores[{missing[0]}].path: no store location given")
        return [spec.path for spec in config.data.stores]
    if not config.data.store:
        raise ConfigError("data.store: no store given (use --store STORE)")
    return [config.data.store]


def primary_store(config: Config) -> EcgStore:
    """The store that validation folds and the online probe come from (the first one)."""
    return EcgStore(store_locations(config)[0])


def store_filters(config: Config, k: int) -> tuple[list[int] | None, list[str] | None]:
    """(training folds, datasets) of store ``k``: its own in data.stores, else data.train_folds / data.datasets."""
    spec = config.data.stores[k] if config.data.stores else None
    folds = spec.folds if spec is not None and spec.folds is not None else config.data.train_folds
    datasets = spec.datasets if spec is not None and spec.datasets is not None else config.data.datasets
    return folds, datasets


def validation_records(config: Config, store: EcgStore) -> np.ndarray:
    """Held-out records of the primary store: data.val_folds within its datasets, long enough for the crop."""
    if not config.data.val_folds:
        return np.zeros(0, dtype=np.int64)
    _, datasets = store_filters(config, 0)
    indices = select_records(store, folds=config.data.val_folds, datasets=datasets)
    return split_too_short(store, indices, config.data.crop)[0]


@dataclass
class TrainingSelection:
    """The records pretraining streams each epoch, per store, and those too short for the crop."""

    parts: list[StorePart]
    too_short: list[str]
    #: records too short for the crop, per store name
    too_short_per_store: dict[str, int]

    @property
    def records(self) -> int:
        return int(sum(len(p.indices) for p in self.parts))

    def too_short_summary(self, config: Config) -> dict:
        summary = too_short_summary(self.too_short, config.data.crop, self.parts[0].store.fs)
        if len(self.parts) > 1:
            summary["per_store"] = dict(self.too_short_per_store)
        return summary


def training_selection(config: Config, stores: list[EcgStore] | None = None) -> TrainingSelection:
    """Training records of every store (folds, datasets), leaving out records shorter than the crop.

    Done before steps are planned: a plan never counts a record the stream cannot cut. Every store
    of a mixture must keep records (its weight would ask for records it cannot give).
    """
    from ecg_ray.data.corpus import check_compatible

    locations = store_locations(config)
    stores = stores if stores is not None else [EcgStore(p) for p in locations]
    check_compatible(stores)
    specs = config.data.stores or [None]
    parts, too_short, short_per_store = [], [], {}
    for k, (store, spec) in enumerate(zip(stores, specs, strict=True)):
        folds, datasets = store_filters(config, k)
        selected = select_records(store, folds=folds, datasets=datasets, label_fraction=1.0, seed=config.seed)
        indices, short = split_too_short(store, selected, config.data.crop)
        too_short += short
        short_per_store[str(store.path)] = len(short)
        if len(indices) == 0:
            why = (f"all {len(short)} selected record(s) are shorter than data.crop={config.data.crop} samples"
                   if short else f"no record matches folds={folds} datasets={datasets}")
            raise ConfigError(f"store {store.path}: no training records ({why})")
        parts.append(StorePart(store, indices, weight=spec.weight if spec is not None else 1.0,
                               name=str(store.path)))
    return TrainingSelection(parts, too_short, short_per_store)


def training_records(config: Config, store: EcgStore) -> np.ndarray:
    """Training records of one store (folds, datasets, long enough for the crop)."""
    indices = select_records(store, folds=config.data.train_folds, datasets=config.data.datasets,
                             label_fraction=1.0, seed=config.seed)
    return split_too_short(store, indices, config.data.crop)[0]


def resolve_precision(precision: str, device_type: str, bf16_supported: bool) -> str:
    """``auto`` -> bf16 on a GPU that supports it, fp16 (with a grad scaler) on an older GPU, fp32 on CPU.

    bf16 autocast on a GPU without bf16 support (before Ampere) is emulated or fails; fp16 with a
    scaler is what those GPUs run fast.
    """
    if precision != "auto":
        return precision
    if device_type != "cuda":
        return "fp32"
    return "bf16" if bf16_supported else "fp16"


def precision_context(precision: str, device: torch.device):
    """(autocast context factory, GradScaler or None) for the requested precision on this device."""
    if precision == "auto":
        precision = resolve_precision(precision, device.type,
                                      device.type == "cuda" and torch.cuda.is_bf16_supported())
    if precision == "fp32":
        return contextlib.nullcontext, None
    if precision == "bf16":
        return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), None
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a GPU; use fp32 or bf16 on CPU")
        return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")
    raise ConfigError(f"train.precision: unknown value {precision!r} (auto, fp32, bf16, fp16)")


def training_step(model, method, x: torch.Tensor, optimizer, scheduler, autocast, scaler, global_step: int) -> torch.Tensor:
    """One optimizer step of a pretraining method; returns the detached fp32 loss.

    ``model`` is what runs the forward pass (the method, or its DDP wrapper); ``method`` gets the
    hooks (after_backward: e.g. freezing SwAV prototypes; after_optimizer_step: e.g. BYOL's EMA).
    ``global_step`` counts this step (1-based). Shared by the Ray Train worker and the benchmarks,
    so that both time exactly the same work.
    """
    with autocast():
        out = model(x)
    loss = out["loss"]
    # No finiteness check here: reading the loss back would stall the GPU every step. The epoch's
    # mean loss is checked once per epoch (check_epoch_loss).
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # hooks and clipping see true gradients
    else:
        loss.backward()
    method.after_backward()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    method.after_optimizer_step(global_step)
    return loss.detach().float()


def check_epoch_loss(mean_loss: float, epoch: int) -> None:
    """Stop a run whose loss went NaN or infinite during ``epoch`` (checked once per epoch, on the mean)."""
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"the mean loss of epoch {epoch} is {mean_loss}: training diverged; lower optim.lr "
                                 "(or use train.precision=fp32)")


def worker_setup(loop_config: dict[str, Any]) -> tuple[Config, int, int, torch.device, EcgStore]:
    """Inside a Ray Train worker: (config, rank, world size, device, store), torch threads applied."""
    import ray.train
    import ray.train.torch

    config: Config = from_dict(Config, loop_config["config"])
    if config.train.torch_threads:
        torch.set_num_threads(config.train.torch_threads)
    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    configure_device(device)
    return config, context.get_world_rank(), context.get_world_size(), device, primary_store(config)


def configure_device(device: torch.device) -> None:
    """GPU kernels tuned for fixed shapes (every step has the same batch and crop) and TF32 matmuls."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def build_optimization(config: Config, method: torch.nn.Module, steps: int):
    """(optimizer, per-step warm-up + cosine scheduler) for a run of ``steps`` steps per epoch."""
    from ecg_ray.optim import build_optimizer, warmup_cosine

    optimizer = build_optimizer(method, name=config.optim.name, lr=config.optim.lr,
                                weight_decay=config.optim.weight_decay, betas=tuple(config.optim.betas),
                                momentum=config.optim.momentum)
    scheduler = warmup_cosine(optimizer, warmup_steps=int(round(config.optim.warmup_epochs * steps)),
                              total_steps=steps * config.train.epochs, min_lr_ratio=config.optim.min_lr_ratio,
                              schedule=config.optim.schedule)
    return optimizer, scheduler


def _epoch_seed(config: Config, epoch: int, rank: int) -> int:
    return (config.seed * 1_000_003 + epoch * 7919 + rank) % (2**63)


def pretrain_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train ``train_func``: build, maybe restore, train, report + checkpoint every epoch."""
    import ray.train
    import ray.train.torch

    from ecg_ray.evaluation.probe import linear_probe_auc
    from ecg_ray.methods import build_method
    from ecg_ray.train.checkpoint import read_ray_checkpoint, save_checkpoint

    config, rank, world, device, store = worker_setup(loop_config)
    # The primary store is already open (worker_setup): open only the other stores of a mixture.
    selection = training_selection(config, [store] + [EcgStore(p) for p in store_locations(config)[1:]])
    train_idx = selection.parts[0].indices  # the online probe fits on the primary store's training records
    too_short = selection.too_short_summary(config)
    per_worker = worker_batch_size(config, world)
    steps = steps_per_epoch(config, selection.records, world)
    total_steps = steps * config.train.epochs

    torch.manual_seed(config.seed)  # identical initial weights on every worker
    method = build_method(config, fs=store.fs).to(device)
    optimizer, scheduler = build_optimization(config, method, steps)
    autocast, scaler = precision_context(config.train.precision, device)
    method.on_train_start(total_steps)

    start_epoch, history, best = 0, [], None
    restored = ray.train.get_checkpoint()
    if restored is not None:
        state, history = read_ray_checkpoint(restored, map_location=device)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        method.load_extra_state(state.get("method_state", {}))
        best = state.get("best")
        torch.set_rng_state(state["torch_rng"].cpu())
        start_epoch = int(state["epoch"]) + 1

    model = method
    if world > 1:
        # Buffers stay per worker: SwAV's queue is local by design and BN statistics need no sync.
        model = ray.train.torch.prepare_model(method, parallel_strategy_kwargs={"broadcast_buffers": False})
    generator = torch.Generator(device=device)
    method.set_generator(generator)
    val_idx = validation_records(config, store)
    has_labels = len(store.label_names) > 0 and store.label_matrix(config.data.label_set).any()
    global_step = start_epoch * steps

    for epoch in range(start_epoch, config.train.epochs):
        method.on_epoch_start(epoch)
        method.train()
        generator.manual_seed(_epoch_seed(config, epoch, rank))
        dataset, info = train_crops(selection.parts, crop=config.data.crop, seed=config.seed, epoch=epoch,
                                    crops_per_record=config.data.crops_per_record, shard_index=rank,
                                    num_shards=world, records_per_task=config.data.records_per_task,
                                    shuffle=config.data.shuffle, shuffle_block=config.data.shuffle_block)
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        done = 0
        for batch in dataset.iter_torch_batches(batch_size=per_worker, drop_last=True, device=device):
            global_step += 1
            loss_sum += training_step(model, method, batch["signal"], optimizer, scheduler, autocast, scaler,
                                      global_step)
            done += 1
            if done >= steps:  # stop before fetching a batch that would not be used
                break
        elapsed = time.perf_counter() - start
        if done < steps:
            raise RuntimeError(f"worker {rank} got {done} batches, expected {steps}: stream shorter than planned")
        mean_loss = loss_sum / done
        if world > 1:
            torch.distributed.all_reduce(mean_loss)
            mean_loss /= world
        # start_epoch and world_size record which attempt ran this epoch (restarts, elastic resizes).
        check_epoch_loss(float(mean_loss), epoch)
        metrics = {"epoch": epoch, "loss": float(mean_loss), "lr": float(scheduler.get_last_lr()[0]),
                   "samples_per_s": done * per_worker * world / elapsed, "steps": global_step,
                   "start_epoch": start_epoch, "world_size": world}
        metrics.update(_validation(config, method, model, store, val_idx, per_worker, world, rank, device,
                                   autocast, has_labels, train_idx, linear_probe_auc))
        if rank == 0:
            best = track_best(best, metrics, epoch, method)
        # The history keeps what the epoch read; Ray gets only the scalar metrics.
        history.append({**metrics, "records_per_store": info.per_store, "too_short": too_short})
        is_last = epoch == config.train.epochs - 1
        if (epoch + 1) % config.train.checkpoint_every == 0 or is_last:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    state = {"model": method.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict() if scaler is not None else {},
                             "method_state": method.extra_state(), "epoch": epoch,
                             "torch_rng": torch.get_rng_state(), "config": to_dict(config), "fs": store.fs,
                             "best": best}
                    save_checkpoint(tmp, state, history)
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=checkpoint)
        else:
            ray.train.report(metrics)


#: validation metrics by preference, with whether higher is better
BEST_METRICS = (("val_macro_auc", True), ("val_loss", False))


def track_best(best: dict | None, metrics: dict[str, Any], epoch: int, method: torch.nn.Module) -> dict | None:
    """The best epoch so far by the run's validation metric, with a CPU copy of its encoder weights.

    Every checkpoint carries it, so ``ecg-ray export RUN --best`` works whatever checkpoints Ray
    kept (``train.keep_checkpoints``); the metric is the online probe's AUC when the run has one,
    else the held-out SSL loss (the reference picked its CPC checkpoint by validation loss).
    """
    for name, higher in BEST_METRICS:
        value = metrics.get(name)
        if value is None or not math.isfinite(float(value)):
            continue
        if best is not None and best["metric"] == name:
            better = value > best["value"] if higher else value < best["value"]
            if not better:
                return best
        return {"epoch": int(epoch), "metric": name, "value": float(value), "higher_is_better": higher,
                "encoder": {k: v.detach().cpu().clone() for k, v in method.encoder.state_dict().items()}}
    return best


def _validation(config, method, model, store, val_idx, per_worker, world, rank, device, autocast, has_labels,
                train_idx, probe_fn) -> dict[str, float]:
    """Online linear probe macro AUC (rank 0) when labels exist, else the SSL loss on held-out records."""
    if len(val_idx) == 0:
        return {}
    if has_labels and config.train.probe:
        if rank != 0:
            return {}
        return probe_fn(method.encoder, store, train_idx, val_idx, label_set=config.data.label_set,
                        window=config.data.window, stride=config.data.stride, max_records=config.train.probe_max_records,
                        seed=config.seed, device=device)
    # Held-out SSL loss: every worker takes the same number of batches (gathering losses need all).
    batch = min(per_worker, len(val_idx) // world)
    if batch < 2:
        return {}
    dataset, _ = train_crops(store, val_idx, crop=config.data.crop, seed=config.seed + 1, epoch=0,
                             shard_index=rank, num_shards=world, shuffle_block=config.data.shuffle_block)
    n_batches = (len(val_idx) // world) // batch
    total, count = torch.zeros((), device=device), 0
    # Validation must not change training state: eval mode keeps BatchNorm running statistics (and
    # SwAV's queue) out of reach of validation data, and the augmentation generator is put back.
    was_training = method.training
    generator_state = method.generator.get_state() if method.generator is not None else None
    method.eval()
    try:
        with torch.no_grad():
            for x in dataset.iter_torch_batches(batch_size=batch, drop_last=True, device=device):
                if count >= n_batches:
                    break
                with autocast():
                    total += model(x["signal"])["loss"].float()
                count += 1
    finally:
        method.train(was_training)
        if generator_state is not None:
            method.generator.set_state(generator_state)
    loss = total / max(1, count)
    if world > 1:
        torch.distributed.all_reduce(loss)
        loss /= world
    return {"val_loss": float(loss)} if math.isfinite(float(loss)) else {}
