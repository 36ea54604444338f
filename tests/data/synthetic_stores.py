"""Cheap synthetic stores for scale tests: many short records, written in groups (as real corpora are)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecg_ray.data.sources.base import Record
from ecg_ray.data.store_writer import StoreWriter


def grouped_store(out: Path, groups: dict[str, int], *, length: int = 60, fs: float = 100.0,
                  codec: str = "none", dataset: str | None = None, lengths: list[int] | None = None) -> Path:
    """A store whose records come group by group (``{"A": 6000, "B": 6000}``: first all A, then all B).

    Each record is labelled with its group name, has ``length`` samples (or ``lengths[i]``), and its
    signal encodes its own position (lead 0 = record number), so a crop can be traced to its record.
    """
    writer = StoreWriter(out, fs=fs, codec=codec)
    i = 0
    for name, count in groups.items():
        for _ in range(count):
            n = lengths[i] if lengths is not None else length
            signal = np.zeros((n, 12), dtype=np.float32)
            signal[:, 0] = i
            signal[:, 1] = np.arange(n)
            writer.add(Record(id=f"r{i:06d}", dataset=dataset or name.lower(), file=f"synthetic/{i}",
                              signal=signal, fs=fs, fs_original=fs, labels=[name],
                              metadata={"fold": 1 + i % 10, "patient_id": f"p{i}"}))
            i += 1
    writer.finalize(sources=[{"kind": "synthetic-grouped", "groups": groups}], label_names=None)
    return out
