"""Range checks of a loaded configuration, run by :func:`ecg_ray.config.load_config` in the driver.

Types are checked while the config is built (``ecg_ray.config._coerce``); this module checks the
values: a negative learning rate, a label fraction of 2 or a temperature of 0 would otherwise
pass and fail only inside a Ray worker (or, worse, train something meaningless). Each failure is
one :class:`ConfigError` naming the dotted key, the rule and the value. Checks that need more than
the config (a store's folds, an encoder file, the augmentation specs with the data's rate) run
where the driver opens those, in :mod:`ecg_ray.train.preflight`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

from ecg_ray.errors import ConfigError

#: (dotted key, rule shown to the user, test); None values are allowed wherever the schema has
#: ``X | None`` (they mean "auto" or "off"), so the tests only see set values. A method's own keys
#: are checked by the ``RULES`` of its config section's dataclass, in the method's file.
_RULES: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("seed", ">= 0", lambda v: v >= 0),
    ("data.label_fraction", "in (0, 1]", lambda v: 0 < v <= 1),
    ("data.crop", ">= 1 (samples)", lambda v: v >= 1),
    ("data.window", ">= 1 (samples), or 0 for whole records", lambda v: v >= 0),
    ("data.stride", ">= 1 (samples)", lambda v: v >= 1),
    ("data.crops_per_record", ">= 1", lambda v: v >= 1),
    ("data.records_per_task", ">= 1 (or null for auto)", lambda v: v >= 1),
    ("data.shuffle_block", ">= 1 (or null for auto)", lambda v: v >= 1),
    ("data.seed", ">= 0", lambda v: v >= 0),
    ("optim.lr", "> 0", lambda v: v > 0),
    ("optim.weight_decay", ">= 0", lambda v: v >= 0),
    ("optim.betas", "two numbers in [0, 1)", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v)),
    ("optim.momentum", "in [0, 1)", lambda v: 0 <= v < 1),
    ("optim.warmup_epochs", ">= 0", lambda v: v >= 0),
    ("optim.schedule", "cosine or constant", lambda v: v in ("cosine", "constant")),
    ("optim.min_lr_ratio", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("train.epochs", ">= 1", lambda v: v >= 1),
    ("train.batch_size", ">= 1", lambda v: v >= 1),
    ("train.workers", ">= 1", lambda v: v >= 1),
    ("train.max_workers", ">= 1 (or null)", lambda v: v >= 1),
    ("train.resize_check_s", "> 0", lambda v: v > 0),
    ("train.gpus_per_worker", ">= 0", lambda v: v >= 0),
    ("train.cpus_per_worker", "> 0 (or null for auto)", lambda v: v > 0),
    ("train.torch_threads", ">= 1 (or null for auto)", lambda v: v >= 1),
    ("train.checkpoint_every", ">= 1", lambda v: v >= 1),
    ("train.probe_every", ">= 1", lambda v: v >= 1),
    ("train.keep_checkpoints", ">= 1", lambda v: v >= 1),
    ("train.max_failures", ">= -1 (-1: retry without limit)", lambda v: v >= -1),
    ("train.max_steps_per_epoch", ">= 1 (or null for a full pass)", lambda v: v >= 1),
    ("train.probe_max_records", ">= 1", lambda v: v >= 1),
    ("eval.head_only_epochs", ">= 0", lambda v: v >= 0),
    ("eval.discriminative_lr_factor", "> 0", lambda v: v > 0),
    ("eval.finetune_lr", "> 0 (or null = optim.lr)", lambda v: v > 0),
    ("eval.min_test_positives", ">= 1", lambda v: v >= 1),
    ("eval.bootstrap", ">= 0 (0: no interval)", lambda v: v >= 0),
    ("eval.knn_k", "a non-empty list of counts >= 1", lambda v: len(v) > 0 and all(k >= 1 for k in v)),
    ("eval.knn_temperature", "> 0", lambda v: v > 0),
    ("eval.logreg_c", "a non-empty list of numbers > 0", lambda v: len(v) > 0 and all(c > 0 for c in v)),
    ("eval.logreg_max_iter", ">= 1", lambda v: v >= 1),
    ("noise.seed", ">= 0", lambda v: v >= 0),
    ("noise.mains_hz", "> 0", lambda v: v > 0),
)


def _lookup(config, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _numbers(node, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every float in the config tree (lists included), with its dotted key."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            if f.name == "method_settings":  # the method sections sit at the top level, under their names
                for name, section in getattr(node, f.name).items():
                    yield from _numbers(section, name)
                continue
            yield from _numbers(getattr(node, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _numbers(item, f"{prefix}[{i}]")
    elif isinstance(node, float):
        yield prefix, node


def check_values(config) -> None:
    """Raise ConfigError for the first setting out of its range (see :data:`_RULES`)."""
    for key, value in _numbers(config):
        if not math.isfinite(value):  # YAML's .inf / .nan parse as numbers, but no setting means them
            raise ConfigError(f"{key} must be a finite number, got {value}")
    rules = list(_RULES)
    for name, section in config.method_settings.items():
        rules += [(f"{name}.{key}", rule, test) for key, rule, test in getattr(type(section), "RULES", ())]
    for key, rule, test in rules:
        value = _lookup(config, key)
        if value is not None and not test(value):
            raise ConfigError(f"{key} must be {rule}, got {value!r}")
    if config.train.max_workers is not None and config.train.max_workers < config.train.workers:
        raise ConfigError(f"train.max_workers={config.train.max_workers} is below train.workers={config.train.workers}")
    from ecg_ray.data.leads import lead_subset

    lead_subset(config.data.leads)  # unknown or repeated names, an empty list
    for k, spec in enumerate(config.data.stores or []):
        if not spec.weight > 0:
            raise ConfigError(f"data.stores[{k}].weight must be > 0, got {spec.weight!r}")
