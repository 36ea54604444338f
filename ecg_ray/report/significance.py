"""Paired significance of a pretrained result against its baseline, via ``ecg_ray.evaluation.compare``.

The comparison module is imported lazily, on the first comparison: it needs only numpy, but it
reads per-record predictions that older runs never saved, and a checkout without it must still
write a report (the tables then say why no marks are shown). Every comparison is a paired
bootstrap over the test records, so the number of them is capped to keep the report fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecg_ray.errors import EcgRayError
from ecg_ray.report.formatting import finite, fmt_p, reason

N_BOOT = 1000
MAX_COMPARISONS = 20
MARK = "*"


@dataclass
class Significance:
    """Runs comparisons up to ``limit``, caching by pair; remembers why none could run at all."""

    limit: int = MAX_COMPARISONS
    n_boot: int = N_BOOT
    count: int = 0
    unavailable: str | None = None
    _cache: dict[tuple[Path, Path], tuple[dict | None, str | None]] = field(default_factory=dict)

    def compare(self, baseline: Path, other: Path, min_test_positives: int = 1) -> tuple[dict | None, str | None]:
        """(result of compare_evaluations(baseline, other), None) or (None, why it was not computed)."""
        key = (Path(baseline), Path(other))
        if key in self._cache:
            return self._cache[key]
        if self.unavailable:
            return None, self.unavailable
        if self.count >= self.limit:
            return None, f"the report runs at most {self.limit} comparisons, to stay fast"
        try:
            from ecg_ray.evaluation.compare import ComparisonError, compare_evaluations
        except ImportError as exc:
            self.unavailable = f"ecg_ray.evaluation.compare is not available ({exc})"
            return None, self.unavailable
        self.count += 1
        try:
            outcome: tuple[dict | None, str | None] = (
                compare_evaluations(baseline, other, n_boot=self.n_boot, seed=0,
                                    min_test_positives=min_test_positives), None)
        except (ComparisonError, EcgRayError) as exc:  # e.g. no predictions saved (PredictionsError)
            outcome = None, str(exc)
        except Exception as exc:  # a corrupt predictions file must not cost the rest of the report
            outcome = None, reason(exc)
        self._cache[key] = outcome
        return outcome


def scale_of(result: dict, reference: bool) -> tuple[dict, bool]:
    """The part of a comparison on the wanted scale, and whether that is the reference scale."""
    ref = result.get("reference_scale")
    if reference and isinstance(ref, dict) and finite(ref.get("p_value")) and finite(ref.get("difference")):
        return ref, True
    return result, False


def is_significant(part: dict) -> bool:
    if "significant" in part:
        return bool(part["significant"])
    return finite(part.get("p_value")) and float(part["p_value"]) < 0.05


def _count(value: Any) -> str:
    if isinstance(value, (list, tuple, set, dict)):
        return str(len(value))
    return str(value) if value is not None else "?"


def describe(result: dict, part: dict, on_reference: bool) -> str:
    """``+0.162 [+0.140, +0.185], p < 0.001; 2198 test records, 71 labels, reference scale``."""
    ci = part.get("ci") or [None, None]
    interval = (f" [{float(ci[0]):+.3f}, {float(ci[1]):+.3f}]"
                if isinstance(ci, (list, tuple)) and len(ci) == 2 and finite(ci[0]) and finite(ci[1]) else "")
    difference = f"{float(part['difference']):+.3f}" if finite(part.get("difference")) else "?"
    scale = "reference scale" if on_reference else "our scale"
    return (f"{difference}{interval}, {fmt_p(part.get('p_value'))}; {_count(result.get('records'))} test records, "
            f"{_count(result.get('labels_compared'))} labels, {scale}")
