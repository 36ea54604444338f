"""Checks of a sweep file that run before Ray starts (see :func:`ecg_ray.tune.load_sweep`).

A malformed search space (``loguniform: [0.1]``), an unknown ``mode`` or a ``metric`` that the
trials never report would otherwise surface only once Tune runs the first trial, or after its
first epoch. Each check raises one :class:`ConfigError` naming the sweep file and the key.

Which metrics a trial reports is fixed by the trial functions: every epoch's ``ray.train.report``
in :mod:`ecg_ray.train.pretrain` and :mod:`ecg_ray.train.downstream` (a test runs a tiny trial
of each kind and compares), plus the keys Tune adds to every result. Tune checks the sweep's
metric in *every* report, so a metric of an evaluation's final report only (``test_macro_auc``)
works only when each trial has one epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from ecg_ray.errors import ConfigError

SPACES = ("grid", "choice", "uniform", "loguniform", "randint", "quniform")
#: the numeric spaces: their arity and the form shown in messages
RANGE_FORMS = {"uniform": "[low, high]", "loguniform": "[low, high]", "randint": "[low, high)",
               "quniform": "[low, high, q]"}
MODES = ("min", "max")
SEARCHERS = ("grid", "random", "optuna")

#: added by Tune to every result
TUNE_METRICS = ("training_iteration", "time_total_s", "time_this_iter_s")
#: in every epoch's report of a pretraining trial (the validation metrics depend on the config, below)
PRETRAIN_METRICS = ("epoch", "loss", "lr", "samples_per_s", "steps", "start_epoch", "world_size", "train_s",
                    "probe_s", "checkpoint_s", "epoch_s")
#: representation-collapse figures of every pretraining epoch (ecg_ray.train.collapse)
PRETRAIN_COLLAPSE_METRICS = ("embedding_std", "embedding_dim")
#: the loss against its uniform-similarity value: methods that have one (not BYOL)
PRETRAIN_UNIFORM_METRICS = ("loss_uniform", "loss_uniform_ratio")
#: the online probe's metrics (validation folds, train.probe, a labelled store); measured every
#: train.probe_every epochs and carried between, val_epoch saying when
PRETRAIN_PROBE_METRICS = ("val_macro_auc", "val_labels_scored")
#: the held-out SSL loss (validation folds, and no probe or no labels)
PRETRAIN_HELD_OUT_METRICS = ("val_loss",)
#: in every epoch's report of an evaluation trial
EVALUATE_METRICS = ("epoch", "loss", "lr", "samples_per_s", "val_macro_auc")
#: in the last report of an evaluation trial only
EVALUATE_FINAL_METRICS = ("val_macro_auc_best", "best_epoch", "test_macro_auc", "test_macro_auc_reference",
                          "test_macro_auc_ci_low", "test_macro_auc_ci_high", "labels_scored")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_space(where: str, space: Any) -> dict[str, list]:
    """A search space ``{KIND: VALUES}`` checked for its kind, arity and bounds; returns it normalised.

    ``where`` names the file and key (``sweep.yaml: search.optim.lr``). randint bounds become ints,
    the other ranges floats.
    """
    if not isinstance(space, dict) or len(space) != 1:
        raise ConfigError(f"{where} must be one mapping {{KIND: VALUES}} with KIND one of {', '.join(SPACES)}, "
                          f"got {space!r}")
    ((kind, values),) = space.items()
    if kind not in SPACES:
        raise ConfigError(f"{where}: unknown space {kind!r}; use one of {', '.join(SPACES)}")
    if kind in ("grid", "choice"):
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {kind} needs a non-empty list of values, got {values!r}")
        return {kind: values}
    form = RANGE_FORMS[kind]
    arity = len(form.split(","))
    if not isinstance(values, list) or len(values) != arity or not all(_is_number(v) for v in values):
        raise ConfigError(f"{where}: {kind} needs {form} ({arity} finite numbers), got {values!r}")
    low, high = values[0], values[1]
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high, got {values!r}")
    if kind == "loguniform" and not low > 0:
        raise ConfigError(f"{where}: loguniform needs 0 < low (it draws on a log scale), got {values!r}")
    if kind == "randint":
        if not all(float(v).is_integer() for v in values):
            raise ConfigError(f"{where}: randint needs integer bounds, got {values!r}")
        return {kind: [int(v) for v in values]}
    if kind == "quniform" and not values[2] > 0:
        raise ConfigError(f"{where}: quniform needs a step q > 0, got {values!r}")
    return {kind: [float(v) for v in values]}


def space_samples(space: dict[str, list]) -> list:
    """Values a space can give, to check against the config: every listed value, or both ends of a
    range and (for continuous ranges) a value between them that is not a whole number."""
    ((kind, values),) = space.items()
    if kind in ("grid", "choice"):
        return list(values)
    low, high = values[0], values[1]
    if kind == "randint":
        return [low, high - 1]  # Tune's randint excludes the upper bound
    # 0.37 of the way: a draw like Tune's, which an integer setting would refuse
    inside = low * (high / low) ** 0.37 if kind == "loguniform" else low + 0.37 * (high - low)
    return [low, high, inside] if kind != "quniform" else [low, high]


def check_fields(path, spec: dict) -> None:
    """Types of the sweep's own keys (not the trial configs)."""
    if not isinstance(spec.get("set"), dict):
        raise ConfigError(f"{path}: set must be a mapping of dotted keys to values, got {spec.get('set')!r}")
    if not isinstance(spec.get("search"), dict):
        raise ConfigError(f"{path}: search must be a mapping of dotted keys to spaces, got {spec.get('search')!r}")
    if not isinstance(spec.get("variants"), list) or not all(isinstance(v, dict) for v in spec["variants"]):
        raise ConfigError(f"{path}: variants must be a list of mappings, got {spec.get('variants')!r}")
    if spec["mode"] not in MODES:
        raise ConfigError(f"{path}: mode must be min or max, got {spec['mode']!r}")
    if not isinstance(spec["metric"], str) or not spec["metric"]:
        raise ConfigError(f"{path}: metric must be a metric name, got {spec['metric']!r}")
    if spec["searcher"] not in SEARCHERS:
        raise ConfigError(f"{path}: searcher must be one of {', '.join(SEARCHERS)}, got {spec['searcher']!r}")
    for key, low in (("num_samples", 1), ("max_concurrent_trials", 0)):
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{path}: {key} must be an integer >= {low}, got {value!r}")
    resources = spec.get("resources_per_trial") or {}
    if not isinstance(resources, dict) or not all(_is_number(v) and v >= 0 for v in resources.values()):
        raise ConfigError(f"{path}: resources_per_trial must map resource names to numbers >= 0, got {resources!r}")


def value_trials(spec: dict, variant_key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what, overrides) for each variant with every space's first value, then with each value each
    space can give substituted in turn: enough configs to try every value once, not the whole grid."""
    first = {key: space_samples(space)[0] for key, space in spec["search"].items()}
    for variant in spec["variants"] or [{}]:
        name = variant.get(variant_key)
        label = f"variant {name!r}" if name is not None else "set"
        fixed = {**spec["set"], **{k: v for k, v in variant.items() if k != variant_key}, **first}
        yield label, fixed
        for key, space in spec["search"].items():
            for value in space_samples(space)[1:]:
                yield f"search.{key} value {value!r}", {**fixed, key: value}


def reported_metrics(kind: str, config, labelled: bool | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(metrics every report of such a trial carries, {metric: why it is not in every report}).

    ``config`` is a trial's config. With the probe on, pretraining reports the probe's metrics on a
    labelled store and the held-out val_loss otherwise: ``labelled`` says which (None: not known
    yet, both count as reported; :func:`check_metric_on_store` decides once the store is open).
    """
    every = dict.fromkeys((*TUNE_METRICS, *(EVALUATE_METRICS if kind == "evaluate" else PRETRAIN_METRICS)), "")
    missing: dict[str, str] = {}
    if kind == "evaluate":
        for name in EVALUATE_FINAL_METRICS:
            if config.train.epochs == 1:
                every[name] = ""
            else:
                missing[name] = (f"it is reported only after a trial's last epoch, and Tune needs the metric in "
                                 f"every report (train.epochs={config.train.epochs}; use val_macro_auc)")
        return every, missing
    every.update(dict.fromkeys(PRETRAIN_COLLAPSE_METRICS, ""))
    from ecg_ray.methods import get_method
    from ecg_ray.methods.base import Method

    method = get_method(config.method.name)
    for name in PRETRAIN_UNIFORM_METRICS:
        if method.uniform_loss is Method.uniform_loss:  # the method declares no uniform-similarity value
            missing[name] = f"{method.display_name or method.name}'s loss has no uniform-similarity value; use embedding_std"
        else:
            every[name] = ""
    probe = config.train.probe and labelled is not False
    held_out = not config.train.probe or labelled is not True
    for name in (*PRETRAIN_PROBE_METRICS, *PRETRAIN_HELD_OUT_METRICS):
        if not config.data.val_folds:
            missing[name] = "pretraining reports validation metrics only with data.val_folds"
        elif name in PRETRAIN_PROBE_METRICS and not probe:
            missing[name] = ("the online probe is off (train.probe=false)" if not config.train.probe
                             else "the store has no labels to probe") + "; the held-out metric is val_loss"
        elif name in PRETRAIN_HELD_OUT_METRICS and not held_out:
            missing[name] = "the store has labels, so the online probe reports val_macro_auc instead"
        else:
            every[name] = ""
    if config.data.val_folds:
        every["val_epoch"] = ""  # the epoch the carried validation figures were measured in
    return every, missing


def check_metric(path, spec: dict, config, labelled: bool | None = None) -> None:
    """The sweep's metric must be one that every report of the trials built from ``config`` carries."""
    metric = spec["metric"]
    every, missing = reported_metrics(spec["kind"], config, labelled)
    if metric in every:
        return
    if metric in missing:
        raise ConfigError(f"{path}: metric {metric!r} is not reported by these {spec['kind']} trials: {missing[metric]}")
    raise ConfigError(f"{path}: metric {metric!r} is never reported by {spec['kind']} trials; "
                      f"choose one of {', '.join(sorted(every))}")


def store_has_labels(config, store) -> bool:
    """Whether pretraining on ``store`` can run the online probe (as the worker decides it)."""
    return len(store.label_names) > 0 and bool(store.label_matrix(config.data.label_set).any())


def check_metric_on_store(path, spec: dict, config, store) -> None:
    """:func:`check_metric` once the trial's (first) store is open and its labels known."""
    check_metric(f"{path} on store {store.path}", spec, config, labelled=store_has_labels(config, store))
