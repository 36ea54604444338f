"""The per-worker ``train_func`` of self-supervised pretraining (runs inside Ray Train workers).

Each worker streams its own equal shard of random crops (``ecg_ray.data.stream``), so every
worker takes the same number of optimizer steps; the global batch is the config's and the
per-worker batch is derived from it. Every epoch ends with one ``ray.train.report`` carrying
the loss, learning rate, throughput and a validation metric, plus a checkpoint.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ecg_ray.config import Config, from_dict
from ecg_ray.data.sampling import StorePart, split_too_short, too_short_summary
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import select_records, train_crops
from ecg_ray.distributed import equal_batches
from ecg_ray.errors import ConfigError
from ecg_ray.train import collapse
from ecg_ray.train.step import (
    build_optimization,
    check_epoch_loss,
    configure_device,
    precision_context,
    training_step,
)


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


def method_batches(dataset, batch_size: int, device: torch.device, fields: tuple[str, ...] = ()):
    """The stream's full batches as dicts of tensors on ``device``: ``signal`` (B, 12, T) and ``fields``.

    Only the columns a method asked for are converted and copied (the others stay on the host),
    through pinned host memory on a GPU so that the copy does not block.
    """
    from ray.data.collate_fn import NumpyBatchCollateFn

    wanted = ("signal", *fields)

    class Requested(NumpyBatchCollateFn):
        def __call__(self, batch):
            with warnings.catch_warnings():
                # Ray hands read-only views of its blocks; the tensors are only read (then copied to the
                # device or into pinned memory), so torch's warning about writing to them does not apply.
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return {name: torch.from_numpy(batch[name]) for name in wanted}

    yield from dataset.iter_torch_batches(batch_size=batch_size, drop_last=True, device=device,
                                          collate_fn=Requested(), pin_memory=device.type == "cuda")


def _epoch_seed(config: Config, epoch: int, rank: int) -> int:
    return (config.seed * 1_000_003 + epoch * 7919 + rank) % (2**63)


def pretrain_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train ``train_func``: build, maybe restore, train, report + checkpoint every epoch."""
    import ray.train
    import ray.train.torch

    from ecg_ray.evaluation.probe import linear_probe_auc
    from ecg_ray.methods import build_method
    from ecg_ray.train.checkpoint import read_ray_checkpoint, save_checkpoint, training_state

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

    validation: dict[str, float] = {}  # the last validation's metrics, carried to epochs without one
    checkpoint_s = 0.0  # wall time of the last checkpoint (save + report), reported with the next epoch
    for epoch in range(start_epoch, config.train.epochs):
        epoch_start = time.perf_counter()
        method.on_epoch_start(epoch)
        method.train()
        generator.manual_seed(_epoch_seed(config, epoch, rank))
        dataset, info = train_crops(selection.parts, crop=config.data.crop, seed=config.seed, epoch=epoch,
                                    crops_per_record=config.data.crops_per_record, shard_index=rank,
                                    num_shards=world, records_per_task=config.data.records_per_task,
                                    shuffle=config.data.shuffle, shuffle_block=config.data.shuffle_block,
                                    label_set=config.data.label_set, fields=method.batch_fields)
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        std_sum = torch.zeros((), device=device)  # collapse statistic, summed on the device like the loss
        done = 0
        # drop_last: every worker's batch has per_worker rows, so gathers skip their size exchange
        with equal_batches():
            for batch in method_batches(dataset, per_worker, device, method.batch_fields):
                global_step += 1
                loss_sum += training_step(model, method, batch, optimizer, scheduler, autocast, scaler,
                                          global_step)
                if method.embedding_std is not None:
                    std_sum += method.embedding_std
                done += 1
                if done >= steps:  # stop before fetching a batch that would not be used
                    break
        if done < steps:
            raise RuntimeError(f"worker {rank} got {done} batches, expected {steps}: stream shorter than planned")
        # Loss and embedding std travel together: one all-reduce and one read back to the host per epoch.
        epoch_means = torch.stack([loss_sum, std_sum]) / done
        if world > 1:
            torch.distributed.all_reduce(epoch_means)
            epoch_means /= world
        mean_loss, mean_std = epoch_means.tolist()
        train_s = time.perf_counter() - start  # after the read back: the device has finished the epoch
        check_epoch_loss(mean_loss, epoch)
        # start_epoch and world_size record which attempt ran this epoch (restarts, elastic resizes).
        metrics = {"epoch": epoch, "loss": mean_loss, "lr": float(scheduler.get_last_lr()[0]),
                   "samples_per_s": done * per_worker * world / train_s, "steps": global_step,
                   "start_epoch": start_epoch, "world_size": world,
                   **collapse.epoch_metrics(mean_std if method.embedding_dim else None, method.embedding_dim,
                                            mean_loss, method.uniform_loss(per_worker, world))}
        is_last = epoch == config.train.epochs - 1
        # Validation every train.probe_every epochs (and on the first and last): in epochs between, the
        # last figures are carried with the epoch they were measured in (val_epoch), so a sweep's metric
        # is in every result.
        probe_start = time.perf_counter()
        fresh = epoch == start_epoch or (epoch + 1) % config.train.probe_every == 0 or is_last
        if fresh:
            measured = _validation(config, method, model, store, val_idx, per_worker, world, rank, device,
                                   autocast, has_labels, train_idx, linear_probe_auc)
            validation = {**measured, "val_epoch": epoch} if measured else {}
        metrics.update(validation)
        probe_s = time.perf_counter() - probe_start
        if rank == 0 and fresh:
            best = track_best(best, metrics, epoch, method)
        # Where the epoch's wall time went (samples_per_s counts the training part only); checkpoint_s
        # is the last checkpoint's save + report, which ends after this epoch's metrics are sent.
        metrics.update({"train_s": train_s, "probe_s": probe_s, "checkpoint_s": checkpoint_s,
                        "epoch_s": time.perf_counter() - epoch_start})
        # The history keeps what the epoch read; Ray gets only the scalar metrics.
        history.append({**metrics, "records_per_store": info.per_store, "too_short": too_short})
        if (epoch + 1) % config.train.checkpoint_every == 0 or is_last:
            checkpoint_start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    state = training_state(config, store.fs, model=method.state_dict(),
                                           optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                                           scaler=scaler.state_dict() if scaler is not None else None,
                                           epoch=epoch, method_state=method.extra_state(), best=best)
                    save_checkpoint(tmp, state, history)
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=checkpoint)
            checkpoint_s = time.perf_counter() - checkpoint_start
        else:
            ray.train.report(metrics)


#: validation metrics by preference, with whether higher is better
BEST_METRICS = (("val_macro_auc", True), ("val_loss", False))


def track_best(best: dict | None, metrics: dict[str, Any], epoch: int, method: torch.nn.Module) -> dict | None:
    """The best epoch so far by the run's validation metric, with a CPU copy of its exported encoder's weights.

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
                "encoder": {k: v.detach().cpu().clone() for k, v in method.exported_encoder().state_dict().items()}}
    return best


def _validation(config, method, model, store, val_idx, per_worker, world, rank, device, autocast, has_labels,
                train_idx, probe_fn) -> dict[str, float]:
    """Online linear probe macro AUC (rank 0) when labels exist, else the SSL loss on held-out records."""
    if len(val_idx) == 0:
        return {}
    if has_labels and config.train.probe:
        if rank != 0:
            return {}
        return probe_fn(method.exported_encoder(), store, train_idx, val_idx, label_set=config.data.label_set,
                        window=config.data.window, stride=config.data.stride, max_records=config.train.probe_max_records,
                        seed=config.seed, device=device)
    # Held-out SSL loss: every worker takes the same number of batches (gathering losses need all).
    batch = min(per_worker, len(val_idx) // world)
    if batch < 2:
        return {}
    dataset, _ = train_crops(store, val_idx, crop=config.data.crop, seed=config.seed + 1, epoch=0,
                             shard_index=rank, num_shards=world, shuffle_block=config.data.shuffle_block,
                             label_set=config.data.label_set, fields=method.batch_fields)
    n_batches = (len(val_idx) // world) // batch
    total, count = torch.zeros((), device=device), 0
    # Validation must not change training state: eval mode keeps BatchNorm running statistics (and
    # SwAV's queue) out of reach of validation data, and the augmentation generator is put back.
    was_training = method.training
    generator_state = method.generator.get_state() if method.generator is not None else None
    method.eval()
    try:
        with torch.no_grad():
            for batch_of_crops in method_batches(dataset, batch, device, method.batch_fields):
                if count >= n_batches:
                    break
                with autocast(), equal_batches():
                    total += model(batch_of_crops)["loss"].float()
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
