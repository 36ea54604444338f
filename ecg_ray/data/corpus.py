"""A corpus of several prepared stores: compatibility checks and a combined summary.

Foundation-scale pretraining mixes corpora prepared separately (CinC, CODE-15, MIMIC-IV-ECG, a
user's own). They can only be streamed together if every store has the same sampling rate and
lead set; :func:`check_compatible` says which two stores differ before Ray starts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ecg_ray.data.store import EcgStore
from ecg_ray.errors import ConfigError


def check_compatible(stores: Sequence[EcgStore]) -> None:
    """Raise ConfigError naming both stores when rates or lead sets differ."""
    if not stores:
        raise ConfigError("no store given")
    first = stores[0]
    for other in stores[1:]:
        if other.fs != first.fs:
            raise ConfigError(f"stores differ in sampling rate: {first.path} is at {first.fs:g} Hz, {other.path} at "
                              f"{other.fs:g} Hz; prepare both at one rate (ecg-ray prepare --target-fs)")
        if other.leads != first.leads:
            raise ConfigError(f"stores differ in leads: {first.path} has {' '.join(first.leads)}, {other.path} has "
                              f"{' '.join(other.leads)}")
    paths = [str(s.path) for s in stores]
    repeated = sorted(p for p, n in Counter(paths).items() if n > 1)
    if repeated:
        raise ConfigError(f"store given more than once: {', '.join(repeated)} (raise its weight instead)")


def combined_summary(summaries: Sequence[dict]) -> dict:
    """What a mixture contains: records, hours and records per dataset over all stores, and each store.

    ``summaries`` are the stores' :meth:`EcgStore.summary` dicts (computed once: on cloud storage
    each lists the store's files).
    """
    summaries = list(summaries)
    per_dataset: Counter = Counter()
    for summary in summaries:
        per_dataset.update(summary["per_dataset"])
    rates = sorted({s["fs"] for s in summaries})
    leads = {tuple(s["leads"]) for s in summaries}
    return {
        "stores": summaries,
        "records": int(sum(s["records"] for s in summaries)),
        "hours": round(sum(s["hours"] for s in summaries), 2),
        "bytes": int(sum(s["bytes"] for s in summaries)),
        "per_dataset": dict(sorted(per_dataset.items())),
        "fs": rates[0] if len(rates) == 1 else rates,
        "compatible": len(rates) == 1 and len(leads) == 1,
    }
