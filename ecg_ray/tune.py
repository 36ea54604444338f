"""Sweeps with Ray Tune: search spaces over the same dotted keys as ``--set``, one row per trial.

Ray 2.60 runs Train V2, where ``Tuner(TorchTrainer)`` is gone: each trial is a function that
builds and fits its own ``TorchTrainer`` (via :func:`ecg_ray.train.trainer.run_evaluation` or
``run_pretraining``) with a ``TuneReportCallback`` that forwards every epoch's report to Tune, so
ASHA can stop weak trials early on the validation metric.

A sweep file (``jobs/sweeps/*.yaml``)::

    name: label-efficiency
    kind: evaluate                      # or pretrain
    base: ../smoke/eval-linear.yaml     # base config, relative to this file
    set: {train.epochs: 3}              # fixed overrides for every trial
    variants:                           # optional grid dimension of named override groups
      - {variant: pretrained linear, eval.mode: linear}
      - {variant: supervised, eval.mode: supervised, eval.encoder: "", eval.pretrained: ""}
    search:                             # dotted key -> space
      data.label_fraction: {grid: [0.05, 0.1, 1.0]}
      optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
    searcher: grid                      # grid | random | optuna
    num_samples: 1
    metric: val_macro_auc
    mode: max
    scheduler: {name: asha, grace_period: 1}   # or none
    max_concurrent_trials: 1

Precedence per trial: base file < ``set`` < the CLI's ``--set`` < variant < searched values.
Before Ray starts, :func:`load_sweep` checks the file (each space's kind, arity and bounds, every
value as a trial config, ``mode``, the scheduler, and that ``metric`` is one the trials report:
:mod:`ecg_ray.sweep_checks` lists them) and :func:`check_sweep_stores` the trials' stores and
encoder files.
Outputs in the sweep directory: ``results.parquet`` / ``results.csv`` (one row per trial: its
config keys and final metrics) and, when trials evaluated noise, ``robustness.parquet`` / ``.csv``
(one row per trial x noise type x SNR). A sweep whose driver died resumes with ``ecg-ray sweep``
on the same output directory: finished trials are kept, unfinished ones continue.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ecg_ray import storage
from ecg_ray.config import load_config
from ecg_ray.errors import ConfigError
from ecg_ray.sweep_checks import SPACES  # noqa: F401  (re-exported: the space kinds of a sweep file)

SPEC_KEYS = {"name", "kind", "base", "set", "variants", "search", "searcher", "num_samples", "metric", "mode",
             "scheduler", "max_concurrent_trials", "resources_per_trial", "description"}
TUNE_DIR = "tune"
VARIANT_KEY = "variant"


def load_sweep(path: Path, overrides: list[str] | None = None, store: Path | None = None) -> dict[str, Any]:
    """Read and validate a sweep file; returns the spec with the base path resolved.

    Everything that can be checked without opening stores is checked here, before Ray starts: the
    sweep's own keys, each search space (kind, arity, bounds), every value each space and variant
    can give (as a trial config), the scheduler, and that the metric is one the trials report.
    """
    from ecg_ray.config import parse_override, read_yaml_file
    from ecg_ray.sweep_checks import check_fields, check_metric, check_space, value_trials

    path = Path(path)
    spec = read_yaml_file(path, "sweep file") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"sweep file {path}: top level must be a mapping")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown sweep key(s) {unknown}; valid: {sorted(SPEC_KEYS)}")
    spec.setdefault("name", path.stem)
    spec.setdefault("kind", "evaluate")
    if spec["kind"] not in ("evaluate", "pretrain"):
        raise ConfigError(f"{path}: kind must be evaluate or pretrain, got {spec['kind']!r}")
    if "base" not in spec:
        raise ConfigError(f"{path}: 'base' (the base config file) is required")
    base = (path.parent / str(spec["base"])).resolve()
    if not base.exists():
        raise ConfigError(f"{path}: base config {base} not found")
    spec["base"] = str(base)
    for key, empty in (("set", {}), ("variants", []), ("search", {})):
        if spec.get(key) is None:  # "search:" with nothing under it reads as null
            spec[key] = empty
    spec.setdefault("searcher", "grid")
    spec.setdefault("num_samples", 1)
    spec.setdefault("metric", "val_macro_auc" if spec["kind"] == "evaluate" else "loss")
    spec.setdefault("mode", "max" if spec["kind"] == "evaluate" else "min")
    spec.setdefault("max_concurrent_trials", 1)
    check_fields(path, spec)
    fixed = dict(spec["set"])
    for item in overrides or []:
        key, value = parse_override(item)
        fixed[key] = value
    if store is not None:
        fixed["data.store"] = storage.normalize(store)
        fixed["data.stores"] = None  # --store wins over a sweep's mixed corpus
    spec["set"] = fixed
    spec["search"] = {key: check_space(f"{path}: search.{key}", space) for key, space in spec["search"].items()}
    if spec["searcher"] == "optuna" and any("grid" in s for s in spec["search"].values()):
        raise ConfigError(f"{path}: optuna cannot search grid spaces; use choice")
    try:
        _scheduler(spec)
    except (TypeError, ValueError, AssertionError) as exc:  # ASHA's own argument checks
        raise ConfigError(f"{path}: scheduler {spec.get('scheduler')!r}: {exc}") from None
    # Every trial's config now, before Ray starts: a typo or a value out of range fails here,
    # naming the key; the first value set of each variant also decides which metrics are reported.
    for what, trial in value_trials(spec, VARIANT_KEY):
        try:
            config = load_config(spec["base"], trial)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {what}: {exc}") from None
        if what == "set" or what.startswith("variant "):
            check_metric(path, spec, config)
    return spec


def check_sweep_stores(spec: dict) -> None:
    """The driver checks of each variant's first trial that open stores and encoder files.

    What a trial would otherwise find only once Ray runs it: a missing store or a fold selection
    without records, an encoder file that does not fit, and for pretraining with the probe on,
    whether the store's labels make the trials report val_macro_auc or val_loss.
    """
    from ecg_ray.sweep_checks import check_metric_on_store
    from ecg_ray.train.trainer import validate_evaluation, validate_pretraining

    where = f"sweep {spec['name']}"
    for trial in preview_trials(spec):
        config = load_config(spec["base"], trial)
        if spec["kind"] == "evaluate":
            validate_evaluation(config)
        else:
            check_metric_on_store(where, spec, config, validate_pretraining(config).parts[0].store)


def preview_trials(spec: dict) -> list[dict[str, Any]]:
    """Representative override sets (each variant x first value of each space) for validation."""
    from ecg_ray.sweep_checks import space_samples

    first = {key: space_samples(space)[0] for key, space in spec["search"].items()}
    variants = spec["variants"] or [{}]
    return [{**spec["set"], **{k: v for k, v in variant.items() if k != VARIANT_KEY}, **first}
            for variant in variants]


def param_space(spec: dict) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {}
    for key, definition in spec["search"].items():
        (kind, value), = definition.items()
        space[key] = {
            "grid": lambda v: tune.grid_search(list(v)),
            "choice": lambda v: tune.choice(list(v)),
            "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v),
            "randint": lambda v: tune.randint(*v),
            "quniform": lambda v: tune.quniform(*v),
        }[kind](value)
    if spec["variants"]:
        space["__variant"] = tune.grid_search(list(range(len(spec["variants"]))))
    return space


def trial_overrides(spec: dict, params: dict) -> tuple[dict[str, Any], str]:
    variant = spec["variants"][params["__variant"]] if "__variant" in params else {}
    searched = {k: v for k, v in params.items() if not k.startswith("__")}
    overrides = {**spec["set"], **{k: v for k, v in variant.items() if k != VARIANT_KEY}, **searched}
    return overrides, str(variant.get(VARIANT_KEY, ""))


def _trial(params: dict, spec: dict, sweep_dir: str) -> None:
    """One Tune trial: build its config and fit a TorchTrainer that reports to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ecg_ray.train.trainer import run_evaluation

    overrides, variant = trial_overrides(spec, params)
    if variant and spec["kind"] == "evaluate":
        overrides["eval.variant"] = variant
    config = load_config(spec["base"], overrides)
    trial_id = tune.get_context().get_trial_id()
    run_dir = storage.join(sweep_dir, "trials", trial_id)
    if spec["kind"] == "evaluate":
        run_evaluation(config, None, callbacks=[TuneReportCallback()], run_dir=run_dir)
    else:
        from ecg_ray.train.pretrain import pretrain_worker
        from ecg_ray.train.trainer import fit, validate_pretraining

        validate_pretraining(config)
        fit(config, run_dir, pretrain_worker, callbacks=[TuneReportCallback()])


def _searcher(spec: dict):
    if spec["searcher"] == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as exc:  # pragma: no cover - optuna is a dependency
            raise ConfigError(f"searcher optuna needs the optuna package ({exc})") from None
        return OptunaSearch(metric=spec["metric"], mode=spec["mode"])
    return None  # grid/random: Tune's basic variant generator


def _scheduler(spec: dict):
    from ray.tune.schedulers import ASHAScheduler

    definition = spec.get("scheduler") or {"name": "none"}
    if isinstance(definition, str):
        definition = {"name": definition}
    name = definition.get("name", "none")
    if name == "none":
        return None
    if name != "asha":
        raise ConfigError(f"scheduler: unknown {name!r} (asha or none)")
    kwargs = {k: v for k, v in definition.items() if k != "name"}
    return ASHAScheduler(time_attr="training_iteration", **kwargs)


def run_sweep(spec: dict, output: str | Path) -> dict[str, Any]:
    """Run (or resume) a sweep; returns a summary with the results table paths."""
    from ray import tune

    from ecg_ray.overwrite import check_sweep_dir
    from ecg_ray.ray_cluster import ensure_ray

    # A local directory or a URI (s3://bucket/sweeps/NAME): new, empty, or a sweep to resume.
    sweep_dir = check_sweep_dir(output)
    ensure_ray()
    storage.write_text(yaml.safe_dump(spec, sort_keys=False), storage.join(sweep_dir, "sweep.yaml"))
    resources = dict(spec.get("resources_per_trial") or {})
    if not any(float(v) > 0 for v in resources.values()):
        # The trial function only drives its TorchTrainer, which reserves the real resources; Tune
        # refuses an empty request, so the driver takes a token share of a CPU.
        resources = {"CPU": 0.01}
    trainable = tune.with_resources(tune.with_parameters(_trial, spec=spec, sweep_dir=str(sweep_dir)), resources)
    experiment = storage.join(sweep_dir, TUNE_DIR)
    if tune.Tuner.can_restore(experiment):
        print(f"resuming sweep from {experiment} (finished trials are kept)")
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(
                metric=spec["metric"], mode=spec["mode"], num_samples=int(spec["num_samples"]),
                search_alg=_searcher(spec), scheduler=_scheduler(spec),
                max_concurrent_trials=int(spec["max_concurrent_trials"]),
            ),
            run_config=tune.RunConfig(name=TUNE_DIR, storage_path=sweep_dir, verbose=1),
        )
    grid = tuner.fit()
    return write_tables(spec, grid, sweep_dir)


def write_tables(spec: dict, grid, sweep_dir: str | Path) -> dict[str, Any]:
    """results.{parquet,csv}: one row per trial; robustness.{parquet,csv}: trial x noise x SNR."""
    rows, noise_rows = [], []
    for result in grid:
        config = dict(result.config or {})
        overrides, variant = trial_overrides(spec, config)
        trial_id = Path(result.path).name if result.path else ""
        metrics = dict(result.metrics or {})
        tid = metrics.get("trial_id", trial_id)
        run_dir = storage.join(sweep_dir, "trials", str(tid))
        row = {"trial_id": tid, "variant": variant, "status": "error" if result.error else "done",
               "run_dir": run_dir}
        row.update({k: _plain(v) for k, v in overrides.items()})
        for key in ("val_macro_auc", "val_macro_auc_best", "test_macro_auc", "test_macro_auc_ci_low",
                    "test_macro_auc_ci_high", "labels_scored", "best_epoch", "loss", "epoch",
                    "training_iteration", "samples_per_s"):
            if key in metrics:
                row[key] = metrics[key]
        evaluation_file = storage.join(run_dir, "evaluation.json")
        if storage.exists(evaluation_file):
            evaluation = json.loads(storage.read_text(evaluation_file))
            row["variant"] = row["variant"] or evaluation.get("variant", "")
            row["val_macro_auc"] = evaluation.get("val_macro_auc", row.get("val_macro_auc"))
            for item in evaluation.get("robustness", []):
                noise_rows.append({"trial_id": tid, "variant": row["variant"], **item,
                                   **{k: v for k, v in row.items() if k.startswith("data.")}})
            if evaluation.get("robustness"):
                noise_rows.append({"trial_id": tid, "variant": row["variant"], "noise_type": "none",
                                   "snr_db": math.inf, "test_macro_auc": evaluation["test_macro_auc"],
                                   "labels_scored": evaluation["labels_scored"]})
        rows.append(row)
    results = pd.DataFrame(rows)
    paths = {}
    for name, table in (("results", results), ("robustness", pd.DataFrame(noise_rows))):
        if table.empty and name == "robustness":
            continue
        table = table.astype({c: str for c in table.columns if table[c].dtype == object})
        parquet = io.BytesIO()
        table.to_parquet(parquet, index=False)
        storage.write_bytes(parquet.getvalue(), storage.join(sweep_dir, f"{name}.parquet"))
        storage.write_text(table.to_csv(index=False), storage.join(sweep_dir, f"{name}.csv"))
        paths[name] = storage.join(sweep_dir, f"{name}.parquet")
    best = None
    if not results.empty and spec["metric"] in results:
        ordered = results.sort_values(spec["metric"], ascending=spec["mode"] == "min")
        best = ordered.iloc[0].to_dict()
    return {"name": spec["name"], "sweep_dir": sweep_dir, "trials": len(results),
            "errored": int((results["status"] == "error").sum()) if not results.empty else 0,
            "robustness_rows": len(noise_rows), "tables": paths, "best": best}


def _plain(value):
    return json.dumps(value) if isinstance(value, list | dict) else value
