"""Number, fold-list and Markdown formatting shared by the report's sections (no files, no plots)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

# PTB-XL's recommended split: folds 1-8 train, 9 validation, 10 test; the paper's label fractions
# train on folds 1..k of these 8, i.e. k/8 of the training records.
PAPER_TRAIN_FOLDS = tuple(range(1, 9))


def finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def reason(exc: BaseException) -> str:
    """One line naming the exception, short enough for a table cell."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 240 else text[:237] + "..."


def fmt_auc(value: Any) -> str:
    return f"{float(value):.3f}" if finite(value) else "—"


def fmt_auc_ci(value: Any, low: Any = None, high: Any = None) -> str:
    """``0.912 [0.901, 0.923]``; the interval is left out when it is not known."""
    if not finite(value):
        return "—"
    if finite(low) and finite(high):
        return f"{float(value):.3f} [{float(low):.3f}, {float(high):.3f}]"
    return f"{float(value):.3f}"


def fmt_mean_std(values: list[float]) -> str:
    values = [float(v) for v in values if finite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} (n={len(values)})"


def fmt_fraction(value: float) -> str:
    return f"{float(value) * 100:g}%" if finite(value) else "—"


def fmt_snr(value: float) -> str:
    return f"{float(value):g} dB"


def fmt_p(value: Any) -> str:
    if not finite(value):
        return "p = ?"
    # A bootstrap p of 0 only says "below the resolution of the resamples".
    return "p < 0.001" if float(value) < 0.001 else f"p = {float(value):.3f}"


def cell(value: Any) -> str:
    text = "—" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def key_text(value: Any) -> str:
    """A hashable, readable form of a config value (lists and arrays from Parquet included)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(key_text(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_folds(value: Any) -> tuple[int, ...] | None:
    """Fold numbers from a list, an array, or the JSON text the sweep writer stores lists as
    (``ecg_ray.tune`` writes ``[1, 2]`` as the string ``"[1, 2]"``); None when absent or unreadable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text or text.lower() in ("nan", "none", "null"):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            # numpy's str() of an array ("[1 2]") is not JSON; its integers still read back.
            numbers = re.findall(r"-?\d+", text)
            return tuple(sorted(int(n) for n in numbers)) or None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),)
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            folds = tuple(sorted(int(v) for v in value))
        except (TypeError, ValueError):
            return None
        return folds or None
    return None


def folds_label(folds: tuple[int, ...]) -> str:
    """``fold 1``, ``folds 1..3`` for a run of consecutive folds, else ``folds 1, 4, 7``."""
    if len(folds) == 1:
        return f"fold {folds[0]}"
    if folds == tuple(range(folds[0], folds[0] + len(folds))):
        return f"folds {folds[0]}..{folds[-1]}"
    return "folds " + ", ".join(map(str, folds))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
