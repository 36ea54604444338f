"""Driver side of a run: validate the config before Ray starts, build and fit the TorchTrainer.

A new run always gets a fresh directory ``OUTPUT/<method>-<timestamp>``; Ray Train resumes a run
whose (storage_path, name) already exists, so reusing a directory is only done on purpose,
with ``--resume RUN_DIR`` (which also reloads that run's saved config). OUTPUT may be a local
directory or a cloud URI (``s3://bucket/runs``): Ray Train uploads checkpoints there, and every
file the driver reads or writes goes through :mod:`ecg_ray.storage`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import yaml

from ecg_ray import storage
from ecg_ray.config import Config, from_dict, to_dict
from ecg_ray.data.store import EcgStore
from ecg_ray.errors import ConfigError, EcgRayError
from ecg_ray.ray_cluster import ensure_ray
from ecg_ray.run_layout import EVALUATION_FILE, RUN_CONFIG, new_run_dir
from ecg_ray.train import collapse

logger = logging.getLogger(__name__)


def validate_pretraining(config: Config):
    """Every check that can fail without Ray: stores, method, encoder, batch split, precision.

    Returns the training selection (records per store, records too short for the crop).
    """
    from ecg_ray.methods import get_method, import_method_module
    from ecg_ray.models import ENCODERS, encoder_output
    from ecg_ray.train.preflight import preflight_pretraining
    from ecg_ray.train.pretrain import steps_per_epoch, training_selection, validation_records

    import_method_module(config.method.module)
    method = get_method(config.method.name)  # an unknown name lists the registered methods
    if config.model.encoder not in ENCODERS:
        raise ConfigError(f"model.encoder: unknown encoder {config.model.encoder!r}; choose one of "
                          f"{', '.join(ENCODERS)}")
    output = encoder_output(config.model.encoder)
    if output != method.encoder_output:
        fitting = [name for name in ENCODERS if encoder_output(name) == method.encoder_output]
        raise ConfigError(f"model.encoder: method {method.name} needs a {method.encoder_output} encoder "
                          f"({', '.join(fitting) or 'none registered'}); {config.model.encoder} is a {output} encoder")
    if config.train.workers < 1:
        raise ConfigError("train.workers must be >= 1")
    if config.train.max_workers is not None and config.train.max_workers < config.train.workers:
        raise ConfigError(f"train.max_workers={config.train.max_workers} is below train.workers={config.train.workers}")
    if config.train.resize_check_s <= 0:
        raise ConfigError(f"train.resize_check_s must be > 0 (got {config.train.resize_check_s})")
    if config.train.epochs < 1:
        raise ConfigError("train.epochs must be >= 1")
    check_precision(config)
    check_resources(config)
    check_stream_settings(config)
    from ecg_ray.train.downstream import check_pretraining_data

    check_pretraining_data(config)  # data.leads, data.window=0: evaluation settings
    selection = training_selection(config, preflight_pretraining(config))  # folds, method, augmentations
    validation_records(config, selection.parts[0].store)  # a bad filter fails here, not inside Ray
    steps_per_epoch(config, selection.records, config.train.workers)
    return selection


def check_resources(config: Config) -> None:
    """GPU settings that would only fail on the cluster.

    A fractional ``gpus_per_worker`` lets Ray place two training ranks on one GPU, and NCCL refuses a
    process group with two ranks on one device; more than one whole GPU per worker is never used
    (each rank drives one device). One worker may take a fraction (e.g. small sweep trials).
    """
    gpus = config.train.gpus_per_worker
    if gpus < 0:
        raise ConfigError(f"train.gpus_per_worker must be >= 0, got {gpus}")
    most_workers = max(config.train.workers, config.train.max_workers or 0)
    if 0 < gpus < 1 and most_workers > 1:
        raise ConfigError(f"train.gpus_per_worker={gpus} with {most_workers} workers would put two ranks on one GPU, "
                          "which NCCL refuses; use 1 GPU per worker (or a single worker for a fraction)")
    if gpus > 1:
        raise ConfigError(f"train.gpus_per_worker={gpus}: each worker drives one GPU; use 1 and more workers "
                          "(train.workers) to use more GPUs")


def check_stream_settings(config: Config) -> None:
    """data.* stream settings that would otherwise fail only inside a Ray worker."""
    if config.data.shuffle_block is not None and config.data.shuffle_block < 1:
        raise ConfigError(f"data.shuffle_block must be >= 1 (or null for auto), got {config.data.shuffle_block}")
    if config.data.records_per_task is not None and config.data.records_per_task < 1:
        raise ConfigError(f"data.records_per_task must be >= 1 (or null for auto), got {config.data.records_per_task}")
    if config.data.crop <= 0:
        raise ConfigError(f"data.crop must be positive, got {config.data.crop}")


def cpus_per_worker(config: Config) -> float:
    """Leave at least one CPU to the Ray Data read tasks on a small machine (else the stream starves)."""
    if config.train.cpus_per_worker is not None:
        return float(config.train.cpus_per_worker)
    import ray

    total = float(ray.cluster_resources().get("CPU", 0))
    workers = config.train.workers
    # +2: one CPU for the Ray Data read tasks and headroom for drivers (e.g. a Tune trial's token share).
    if total == 0 or total >= workers + 2:
        return 1.0
    return max(0.25, int((total - 1.01) / workers * 4) / 4)


def load_run_config(run_dir: str | Path) -> dict:
    path = storage.join(run_dir, RUN_CONFIG)
    if not storage.exists(path):
        raise EcgRayError(f"{run_dir}: not an ecg_ray run directory (no {RUN_CONFIG}); cannot resume")
    from ecg_ray.config import load_yaml

    return load_yaml(storage.read_text(path))


def fit(config: Config, run_dir: str | Path, train_func, callbacks: list | None = None) -> dict[str, Any]:
    """Fit a TorchTrainer for ``train_func`` writing into ``run_dir``; returns a summary dict."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ecg_ray.train.checkpoint import load_history
    from ecg_ray.train.failures import training_failure

    ensure_ray()
    run_dir = storage.normalize(run_dir)
    storage.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), storage.join(run_dir, RUN_CONFIG))
    gpus = config.train.gpus_per_worker
    workers = config.train.workers
    elastic = {}
    if config.train.max_workers and config.train.max_workers > workers:
        workers = (workers, config.train.max_workers)  # elastic: Ray Train scales within these bounds
        elastic = {"elastic_resize_monitor_interval_s": float(config.train.resize_check_s)}
    resources = {"CPU": cpus_per_worker(config)}
    if gpus > 0:
        resources["GPU"] = gpus
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"config": to_dict(config)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources,
                                     **elastic),
        run_config=RunConfig(
            name=storage.name(run_dir), storage_path=storage.parent(run_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=config.train.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            callbacks=callbacks or None,
            # Ray Train logs a failed worker's traceback to the console twice (worker, then controller):
            # keep its console to critical messages; a failure is told in one line by
            # training_failure, with the traceback in RUN/error.log (and Ray's session logs/train).
            logging_config=LoggingConfig(log_level="CRITICAL"),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        # Ray Train raises WorkerGroupError/ControllerError with every worker's traceback in the
        # message: the user gets one line naming the cause, the traceback goes to RUN/error.log.
        raise training_failure(exc, run_dir) from exc
    if result.error is not None:
        raise training_failure(result.error, run_dir) from result.error
    # The checkpoint's own path drops the URI scheme on cloud storage; rebuild it under the run dir.
    checkpoint = (storage.join(run_dir, Path(result.checkpoint.path).name)
                  if result.checkpoint is not None else None)
    history = load_history(checkpoint) if checkpoint is not None else []
    return {"run_dir": run_dir, "checkpoint": checkpoint, "history": history}


def run_pretraining(config: Config, output: str | Path | None,
                    resume: str | Path | None = None) -> dict[str, Any]:
    from ecg_ray.train.pretrain import pretrain_worker

    selection = validate_pretraining(config)
    if resume is not None:
        run_dir = storage.normalize(resume)
    else:
        if output is None:
            raise ConfigError("--output DIR is required for a new run")
        run_dir = new_run_dir(output, config.method.name)
    if resume is not None:
        announce_resume(run_dir)
    start = time.perf_counter()
    summary = fit(config, run_dir, pretrain_worker)
    history = summary.pop("history")
    last = history[-1] if history else {}
    verdict = collapse.assess(history)
    if verdict is not None and verdict["collapsed"]:
        warn(run_dir, f"{run_dir}: the representation has collapsed ({verdict['reason']}); the encoder is "
                      "unlikely to be useful: lower optim.lr or check the augmentations")
    return {
        "method": config.method.name,
        "encoder": config.model.encoder,
        "epochs": len(history),
        "loss": [h["loss"] for h in history],
        "samples_per_s": last.get("samples_per_s"),
        "val_macro_auc": last.get("val_macro_auc"),
        "val_loss": last.get("val_loss"),
        "workers": config.train.workers,
        "records": selection.records,
        "too_short": last.get("too_short", selection.too_short_summary(config)),
        "records_per_store": last.get("records_per_store", {}),
        "wall_s": round(time.perf_counter() - start, 2),
        "collapse": verdict,
        **summary,
    }


def warn(run_dir: str, message: str) -> None:
    """A warning on stderr (one line) that is also kept in RUN/warnings.log."""
    from ecg_ray.train.failures import WARNINGS_LOG, append_run_log

    logger.warning("%s", message)
    append_run_log(run_dir, WARNINGS_LOG, message)


def announce_resume(run_dir: str) -> None:
    """Point Ray at the newest checkpoint of ``run_dir`` that loads, saying which newer ones were passed over."""
    from ecg_ray.train.checkpoint import load_history, prepare_resume

    point = prepare_resume(run_dir)
    for location, why in point.skipped:
        epochs = len(load_history(point.checkpoint))
        warn(run_dir, f"{location} does not load ({why}); resuming from {point.checkpoint} (after epoch "
                      f"{epochs - 1}) instead. The bad checkpoint is kept, untracked by Ray Train so that it "
                      f"is never deleted; Ray's previous snapshot is in {point.snapshot_backup}")


def resume_config(run_dir: str | Path, overrides: list[str], epochs: int | None) -> Config:
    """The saved config of a run, with --set overrides and --epochs applied (to extend a run)."""
    from ecg_ray.config import parse_override, set_dotted

    tree = load_run_config(run_dir)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(tree, key, value)
    if epochs is not None:
        set_dotted(tree, "train.epochs", epochs)
    return from_dict(Config, tree)


def check_precision(config: Config) -> None:
    """train.precision is known and, for fp16, has GPUs (pretraining and downstream training alike)."""
    if config.train.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"train.precision: unknown value {config.train.precision!r} (auto, fp32, bf16, fp16)")
    if config.train.precision == "fp16" and config.train.gpus_per_worker <= 0:
        raise ConfigError("train.precision=fp16 needs GPUs (train.gpus_per_worker > 0)")


def validate_evaluation(config: Config) -> EcgStore:
    from ecg_ray.models import ENCODERS
    from ecg_ray.optim import OPTIMIZERS
    from ecg_ray.train.classifier import DISCRIMINATIVE_GROUPS, HEAD_BIAS_INITS
    from ecg_ray.train.downstream import MODES, load_encoder_weights, plan_phases, splits
    from ecg_ray.train.preflight import preflight_evaluation

    if config.eval.mode not in MODES:
        raise ConfigError(f"eval.mode: unknown mode {config.eval.mode!r}; choose one of {', '.join(MODES)}")
    check_precision(config)
    if str(config.optim.name).strip().lower() not in OPTIMIZERS:  # the workers build optim.name (train.step)
        raise ConfigError(f"optim.name: unknown optimizer {config.optim.name!r} (known: {', '.join(OPTIMIZERS)})")
    if config.eval.mode == "supervised" and (config.eval.encoder or config.eval.pretrained):
        raise ConfigError("eval.mode=supervised trains from random initialisation; drop --encoder/--pretrained")
    if config.eval.mode == "finetune" and not (config.eval.encoder or config.eval.pretrained):
        raise ConfigError("eval.mode=finetune needs --encoder FILE or --pretrained RUN_DIR "
                          "(use --mode supervised for random initialisation)")
    if config.model.encoder not in ENCODERS:
        raise ConfigError(f"model.encoder: unknown encoder {config.model.encoder!r}")
    if config.eval.head not in ("auto", "linear", "mlp"):
        raise ConfigError(f"eval.head: unknown head {config.eval.head!r} (auto, linear, mlp)")
    if config.eval.discriminative_groups not in DISCRIMINATIVE_GROUPS:
        raise ConfigError(f"eval.discriminative_groups: unknown rule {config.eval.discriminative_groups!r}; "
                          f"choose one of {', '.join(DISCRIMINATIVE_GROUPS)}")
    if not config.eval.discriminative_lr_factor > 0:
        raise ConfigError(f"eval.discriminative_lr_factor must be > 0, got {config.eval.discriminative_lr_factor}")
    if config.eval.finetune_lr is not None and not config.eval.finetune_lr > 0:
        raise ConfigError(f"eval.finetune_lr must be > 0 (or null = optim.lr), got {config.eval.finetune_lr}")
    if config.eval.head_bias_init not in HEAD_BIAS_INITS:
        raise ConfigError(f"eval.head_bias_init: unknown value {config.eval.head_bias_init!r}; choose one of "
                          f"{', '.join(HEAD_BIAS_INITS)}")
    if config.eval.min_test_positives < 1:
        raise ConfigError(f"eval.min_test_positives must be >= 1, got {config.eval.min_test_positives}")
    if config.eval.head_only_epochs < 0:
        raise ConfigError(f"eval.head_only_epochs must be >= 0, got {config.eval.head_only_epochs}")
    plan_phases(config)  # head-only epochs must leave all-layers epochs
    load_encoder_weights(config)  # fails early on a missing or foreign file
    if config.data.stores:
        raise ConfigError("evaluation trains and tests on one labelled store (data.store); data.stores mixes "
                          "stores for pretraining only")
    if not config.data.store:
        raise ConfigError("data.store: no store given (use --store STORE)")
    check_resources(config)
    check_stream_settings(config)
    from ecg_ray.train.downstream import check_evaluation_data

    check_evaluation_data(config)  # data.leads, data.window=0 with this encoder
    store = EcgStore(config.data.store)
    if config.data.label_set not in store.manifest.get("label_sets", {}):
        raise ConfigError(f"data.label_set: {config.data.label_set!r} not in store "
                          f"(has {sorted(store.manifest.get('label_sets', {}))})")
    preflight_evaluation(config, store)  # each fold selection has records
    train, _, _ = splits(config, store)
    if config.train.batch_size % config.train.workers:
        raise ConfigError(f"train.batch_size={config.train.batch_size} cannot be split over {config.train.workers} workers")
    if len(train) < config.train.workers:
        raise ConfigError(f"only {len(train)} labelled training records for {config.train.workers} workers")
    from ecg_ray.evaluation.noise import NOISE_TYPES

    unknown = [t for t in config.noise.types if t not in NOISE_TYPES]
    if unknown:
        raise ConfigError(f"noise.types: unknown {unknown}; choose from {', '.join(NOISE_TYPES)}")
    return store


def run_evaluation(config: Config, output: str | Path | None, callbacks: list | None = None,
                   run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train/evaluate one downstream model; writes RUN_DIR/evaluation.json; returns the summary."""
    import json

    from ecg_ray.evaluation.predictions import PREDICTIONS_FILE
    from ecg_ray.train.downstream import downstream_worker
    from ecg_ray.train.embedding_evaluation import PROBE_MODES, run_embedding_probe

    if config.eval.mode in PROBE_MODES:  # probes on cached embeddings: fitted in the driver, no Ray Train run
        return run_embedding_probe(config, output, run_dir=run_dir)
    validate_evaluation(config)
    if run_dir is None:
        if output is None:
            raise ConfigError("--output DIR is required")
        run_dir = new_run_dir(output, f"eval-{config.eval.mode}")
    start = time.perf_counter()
    summary = fit(config, run_dir, downstream_worker, callbacks=callbacks)
    checkpoint = summary["checkpoint"]
    evaluation = json.loads(storage.read_text(storage.join(checkpoint, EVALUATION_FILE)))
    evaluation["run_dir"] = summary["run_dir"]
    evaluation["checkpoint"] = checkpoint
    storage.write_text(json.dumps(evaluation, indent=1), storage.join(summary["run_dir"], EVALUATION_FILE))
    # The per-record test predictions sit beside evaluation.json so that `ecg-ray compare` finds them.
    predictions = storage.join(checkpoint, PREDICTIONS_FILE)
    if storage.exists(predictions):
        storage.write_bytes(storage.read_bytes(predictions), storage.join(summary["run_dir"], PREDICTIONS_FILE))
    return {
        "mode": evaluation["mode"],
        "variant": evaluation["variant"],
        "val_macro_auc": evaluation["val_macro_auc"],
        "test_macro_auc": evaluation["test_macro_auc"],
        "test_macro_auc_ci": evaluation["test_macro_auc_ci"],
        "test_macro_auc_reference": evaluation["test_macro_auc_reference"],
        "test_macro_auc_reference_ci": evaluation["test_macro_auc_reference_ci"],
        "min_test_positives": evaluation["min_test_positives"],
        "labels_excluded": [item["label"] for item in evaluation["labels_excluded"]],
        "labels_scored": evaluation["labels_scored"],
        "labels_skipped": evaluation["labels_skipped"],
        "best_epoch": evaluation["best_epoch"],
        "epochs": len(evaluation["history"]),
        "robustness": evaluation["robustness"],
        "run_dir": summary["run_dir"],
        "checkpoint": checkpoint,
        "wall_s": round(time.perf_counter() - start, 2),
    }
