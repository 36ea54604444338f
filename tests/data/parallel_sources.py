"""Cheap sources for the ``prepare --ray`` tests: many short records whose signals name themselves.

A module of its own (not the test file) so that Ray worker processes, which unpickle the sources,
import it by name; ``prepare_cluster.py`` uses it too.
"""

from __future__ import annotations

import numpy as np

from ecg_ray.data.sources.base import Record, Source
from ecg_ray.errors import RecordError

FS = 100.0


class ShortRecords(Source):
    """``n`` records of 20-69 samples; lead 0 holds the record number, lead 1 the sample index.

    Every ``skip_every``-th record (from 5) fails to read, as a corrupt file does; every 1000th
    (from 7) carries a label text kept verbatim; folds cycle 1..10 so fold exclusions bite.
    ``fail_at`` makes ``extra_label_columns`` raise for that record: an error outside the
    reader's own checks, which stops the run (in the pool path as in a Ray task).
    """

    kind = "short"

    def __init__(self, n: int, *, skip_every: int = 997, fail_at: int | None = None):
        super().__init__(FS)
        self.n, self.skip_every, self.fail_at = n, skip_every, fail_at

    def refs(self) -> list[int]:
        return list(range(self.n))

    def ref_id(self, ref: int) -> tuple[str, str]:
        return f"r{ref:06d}", f"short/{ref}.dat"

    def read(self, ref: int) -> Record:
        record_id, file = self.ref_id(ref)
        if ref % self.skip_every == 5:
            raise RecordError(record_id, file, "truncated data")
        length = 20 + (ref * 7) % 50
        signal = np.zeros((length, 12), dtype=np.float32)
        signal[:, 0] = ref
        signal[:, 1] = np.arange(length)
        signal[:, 2] = np.sin(ref + np.arange(length) / 7.0)
        unmapped = ["odd text"] if ref % 1000 == 7 else []
        return Record(id=record_id, dataset="short", file=file, signal=signal, fs=FS, fs_original=250.0,
                      labels=["A" if ref % 3 else "B", *unmapped],
                      metadata={"fold": 1 + ref % 10, "patient_id": f"p{ref // 2}", "age": float(ref % 90)},
                      unmapped_labels=unmapped)

    def extra_label_columns(self, record: Record) -> dict[str, int]:
        if self.fail_at is not None and record.id == self.ref_id(self.fail_at)[0]:
            raise RuntimeError(f"injected failure at {record.id}")
        return {"super:AB": 1} if "A" in record.labels else {}

    def describe(self) -> dict:
        return {"kind": self.kind, "records": self.n}
