"""The one interface every dataset reader implements.

A source lists lightweight references to its records up front (so progress is known and reads
can run in a process pool) and reads one reference at a time into a :class:`Record` whose
signal is already standardized (float32 mV, (time, 12), canonical leads, store rate).
A record that cannot be read raises :class:`~ecg_ray.errors.RecordError`; the caller decides
whether that skips the record or stops the run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Record:
    """One standardized recording.

    ``signal`` is float32 millivolts with shape (time, 12) in canonical lead order at ``fs``.
    ``labels`` are label names (e.g. SCP statements or SNOMED codes) present in the record.
    ``metadata`` holds per-record columns (patient_id, age, sex, fold, ...) for the Parquet table.
    ``unmapped_labels`` are label texts the reader could not map to its coding scheme and kept
    verbatim as label names (e.g. a CinC diagnosis that is neither a SNOMED-CT code nor a known
    abbreviation); the store counts them in its manifest (``label_warnings``).
    """

    id: str
    dataset: str
    file: str
    signal: np.ndarray
    fs: float
    fs_original: float
    labels: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    unmapped_labels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out, with the file and the reason (shown in the manifest and summary)."""

    id: str
    file: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "file": self.file, "reason": self.reason}


class Source(ABC):
    """A dataset reader: ``refs()`` lists records, ``read(ref)`` loads one.

    Subclasses must be picklable (they are sent to reader processes) and keep ``read``
    independent of other records.
    """

    #: short name written to the manifest ("ptbxl", "cinc", ...)
    kind: str = ""

    def __init__(self, fs_out: float = 100.0):
        self.fs_out = float(fs_out)

    @abstractmethod
    def refs(self) -> list[Hashable]:
        """Cheap references to every record, in a stable order."""

    @abstractmethod
    def read(self, ref: Hashable) -> Record:
        """Load and standardize one record; raise RecordError naming the file on bad input."""

    def ref_id(self, ref: Hashable) -> tuple[str, str]:
        """(record id, file) for a reference, used when a read fails unexpectedly."""
        return str(ref), str(ref)

    def label_names(self) -> list[str] | None:
        """The full ordered label set when the dataset defines one (PTB-XL's 71 statements).

        None means "the sorted union of labels seen", decided after all records are read.
        """
        return None

    def label_sets(self) -> dict[str, list[str]]:
        """Named views over the label columns (e.g. PTB-XL's diagnostic/form/rhythm)."""
        return {}

    def extra_label_columns(self, record: Record) -> dict[str, int]:
        """Extra 0/1 label columns derived per record (e.g. PTB-XL superclasses)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this source."""
        return {"kind": self.kind}


def label_sort_key(name: str):
    """Numeric codes (SNOMED-CT) in numeric order, other names alphabetically after them."""
    return (0, int(name), "") if name.isascii() and name.isdigit() else (1, 0, name)


def stable_fold(key: str, n_folds: int = 10) -> int:
    """Deterministic fold 1..n_folds from a record or patient key (same on every machine).

    Used for sources without official folds, as the paper did (10 folds per source), so that
    "pretrain on folds 1-8, validate on 9" means the same records everywhere.
    """
    import hashlib

    digest = hashlib.sha256(str(key).encode()).digest()
    return int.from_bytes(digest[:8], "little") % n_folds + 1
