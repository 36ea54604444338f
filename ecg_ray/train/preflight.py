"""Driver checks that need the run's stores, done before Ray starts (called by ``ecg_ray.train.trainer``).

:func:`ecg_ray.config_values.check_values` checks what the config alone decides; this module checks
what also needs the data:

* each fold selection must name folds the store has: ``data.train_folds=[11]`` says "no records in
  folds [11] of STORE (folds present: 1..10)", not a later "lower train.batch_size";
* pretraining builds its method (encoder, heads, augmentations with the store's sampling rate) and
  its optimizer and schedule on the meta device, with the code the workers run, so an
  ``augmentations:`` entry with an unknown name or parameter, or a CPC step the crop cannot reach,
  fails here. The meta device allocates nothing, so this costs milliseconds even for large encoders.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ecg_ray.config import Config
from ecg_ray.data.store import EcgStore
from ecg_ray.errors import ConfigError


def fold_ranges(folds: Sequence[int]) -> str:
    """``[1, 2, 3, 5, 7, 8]`` -> ``"1..3, 5, 7..8"``."""
    runs: list[list[int]] = []
    for fold in sorted(folds):
        if runs and fold == runs[-1][-1] + 1:
            runs[-1].append(fold)
        else:
            runs.append([fold])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


def check_folds(store: EcgStore, folds: Sequence[int] | None, key: str) -> None:
    """Raise ConfigError when ``folds`` (the setting ``key``) selects no record of ``store``."""
    if not folds:
        return  # null / []: every record (or the caller's own "folds required" message)
    if not store.has_column("fold"):
        raise ConfigError(f"{key}={list(folds)}: store {store.path} has no folds; set {key}=null")
    present = sorted({int(f) for f in pd.unique(store.column("fold")) if not pd.isna(f)})
    if not set(int(f) for f in folds) & set(present):
        raise ConfigError(f"{key}: no records in folds {list(folds)} of {store.path} "
                          f"(folds present: {fold_ranges(present) or 'none'})")


def build_on_meta(config: Config, fs: float, steps_per_epoch: int = 1) -> None:
    """Build the pretraining method and its optimizer and lr schedule as a worker would, on the meta device."""
    import torch

    from ecg_ray.methods import build_method
    from ecg_ray.train.pretrain import build_optimization

    with torch.device("meta"):
        method = build_method(config, fs)
    build_optimization(config, method, steps_per_epoch)


def preflight_pretraining(config: Config) -> list[EcgStore]:
    """Open the run's stores, check their fold selections and build the method; returns the stores."""
    from ecg_ray.train.pretrain import store_filters, store_locations

    stores = [EcgStore(location) for location in store_locations(config)]
    for k, store in enumerate(stores):
        folds, _ = store_filters(config, k)
        own = config.data.stores is not None and config.data.stores[k].folds is not None
        check_folds(store, folds, f"data.stores[{k}].folds" if own else "data.train_folds")
    check_folds(stores[0], config.data.val_folds, "data.val_folds")  # validation reads the first store
    build_on_meta(config, stores[0].fs)
    return stores


def preflight_evaluation(config: Config, store: EcgStore) -> None:
    """The evaluation's training, validation and test folds must each select records of ``store``."""
    for key in ("train_folds", "val_folds", "test_folds"):
        check_folds(store, getattr(config.data, key), f"data.{key}")
