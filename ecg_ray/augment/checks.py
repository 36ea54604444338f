"""Argument checks shared by the augmentation constructors; every failure is a ConfigError.

Constructors validate their arguments themselves (not only :func:`build_augmentation`) so that a
transform built in code fails as clearly as one built from a config file. Messages name the
transform and the key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ecg_ray.errors import ConfigError


def _number(owner: str, key: str, value: Any, lo: float = -math.inf, hi: float = math.inf,
            lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}: {key!r} must be a finite number, got {value!r}")
    value = float(value)
    if value < lo or value > hi or (lo_open and value == lo):
        low = f"{lo} < " if lo_open else (f"{lo} <= " if lo > -math.inf else "")
        high = f" <= {hi}" if hi < math.inf else ""
        raise ConfigError(f"{owner}: {key!r} must satisfy {low}{key}{high}, got {value!r}")
    return value


def _integer(owner: str, key: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{owner}: {key!r} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _pair(owner: str, key: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{owner}: {key!r} must be a pair [low, high], got {value!r}")
    items = list(value)
    if len(items) != 2:
        raise ConfigError(f"{owner}: {key!r} must be a pair [low, high], got {value!r}")
    a = _number(owner, key, items[0], lo, hi)
    b = _number(owner, key, items[1], lo, hi)
    if a > b:
        raise ConfigError(f"{owner}: {key!r} must have low <= high, got {value!r}")
    return a, b


def _choice(owner: str, key: str, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{owner}: {key!r} must be one of {', '.join(allowed)}, got {value!r}")
    return value
