"""Per-record test predictions saved next to ``evaluation.json``, so evaluations can be compared later.

A macro AUC and its interval cannot tell whether two models differ: that needs both models'
outputs on the same records (a paired comparison, :mod:`ecg_ray.evaluation.compare`). Each
evaluation therefore keeps its test predictions in ``test_predictions.npz``: the store's record
ids, the sigmoid outputs averaged over windows, the label matrix and the label names.

The file holds plain arrays only (ids and names as fixed-width unicode), so it is read with
``allow_pickle=False``: loading a file from someone else's run cannot execute code.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ecg_ray import storage
from ecg_ray.errors import EcgRayError
from ecg_ray.run_layout import EVALUATION_FILE

PREDICTIONS_FILE = "test_predictions.npz"
# Written into every file; a reader refuses files from a newer layout instead of misreading them.
FORMAT_VERSION = 1

_MISSING_HINT = ("evaluations made by earlier ecg_ray versions did not save per-record test predictions; "
                 "re-run the evaluation")


class PredictionsError(EcgRayError):
    """Test predictions are missing, unreadable or inconsistent; the message names the location."""


@dataclass
class Predictions:
    """One evaluation's test predictions: row i of ``probs``/``labels`` belongs to ``record_ids[i]``."""

    record_ids: np.ndarray  # str, one per test record (the store's record ids)
    probs: np.ndarray  # float32 (n, L), sigmoid outputs averaged over windows
    labels: np.ndarray  # uint8 (n, L)
    label_names: list[str]
    label_set: str

    def __post_init__(self):
        self.record_ids = np.asarray(self.record_ids).astype(str).reshape(-1)
        self.probs = np.asarray(self.probs, dtype=np.float32)
        labels = np.asarray(self.labels)
        if labels.size and not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be 0/1")
        self.labels = labels.astype(np.uint8)
        self.label_names = [str(n) for n in self.label_names]
        self.label_set = str(self.label_set)
        n, n_labels = len(self.record_ids), len(self.label_names)
        for name, array in (("probs", self.probs), ("labels", self.labels)):
            if array.shape != (n, n_labels):
                raise ValueError(f"{name} has shape {array.shape}, expected ({n}, {n_labels}) "
                                 f"for {n} record ids and {n_labels} label names")


def _location(path: str | os.PathLike) -> str:
    """The ``.npz`` location for a file path, or ``PREDICTIONS_FILE`` inside a directory path."""
    path = storage.normalize(path)
    return path if path.endswith(".npz") else storage.join(path, PREDICTIONS_FILE)


def save_predictions(path: str | os.PathLike, predictions: Predictions) -> None:
    """Write ``predictions`` to ``path`` (a ``.npz`` location, or a directory to hold ``PREDICTIONS_FILE``).

    The whole file is built in memory and written in one piece (``storage.write_bytes`` is
    atomic), so a reader never sees half a file, locally or in cloud storage.
    """
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        format_version=np.array(FORMAT_VERSION),
        record_ids=predictions.record_ids.astype(str),
        probs=predictions.probs.astype(np.float32),
        labels=predictions.labels.astype(np.uint8),
        label_names=np.array(predictions.label_names, dtype=str),
        label_set=np.array(predictions.label_set, dtype=str),
    )
    storage.write_bytes(buffer.getvalue(), _location(path))


def find_predictions(source: str | os.PathLike) -> str:
    """Location of the predictions file for a run directory, an ``evaluation.json`` or the ``.npz`` itself.

    A directory is searched at its top first, then below it (evaluations write their files into a
    checkpoint folder); more than one file below it is ambiguous and refused.
    """
    location = storage.normalize(source)
    if storage.is_file(location):
        if location.endswith(".npz"):
            return location
        if storage.name(location).endswith(".json"):
            beside = storage.join(storage.parent(location), PREDICTIONS_FILE)
            if storage.is_file(beside):
                return beside
            raise PredictionsError(f"{location}: no {PREDICTIONS_FILE} beside it ({_MISSING_HINT})")
        raise PredictionsError(f"{location}: neither a run directory, an {EVALUATION_FILE} "
                               f"nor a {PREDICTIONS_FILE}")
    if not storage.is_dir(location):
        raise PredictionsError(f"{location}: not found")
    top = storage.join(location, PREDICTIONS_FILE)
    if storage.is_file(top):
        return top
    files = [rel for rel, _ in storage.list_files(location)]
    found = [rel for rel in files if rel.rsplit("/", 1)[-1] == PREDICTIONS_FILE]
    if len(found) == 1:
        return storage.join(location, found[0])
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise PredictionsError(f"{location}: {len(found)} {PREDICTIONS_FILE} files below it ({shown}); "
                               f"pass the one to use")
    if any(rel.rsplit("/", 1)[-1] == EVALUATION_FILE for rel in files):
        raise PredictionsError(f"{location}: no {PREDICTIONS_FILE} ({_MISSING_HINT})")
    raise PredictionsError(f"{location}: no {EVALUATION_FILE} or {PREDICTIONS_FILE} in it (not an evaluation run)")


def load_predictions(source: str | os.PathLike) -> Predictions:
    """Read predictions from a run directory, an ``evaluation.json`` path or the ``.npz`` itself."""
    location = find_predictions(source)
    data = storage.read_bytes(location)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = {"format_version", "record_ids", "probs", "labels", "label_names", "label_set"} - set(npz.files)
            if missing:
                raise PredictionsError(f"{location}: not a predictions file (no {', '.join(sorted(missing))})")
            version = int(npz["format_version"])
            if version > FORMAT_VERSION:
                raise PredictionsError(f"{location}: predictions format {version} is newer than this ecg_ray "
                                       f"reads ({FORMAT_VERSION}); upgrade ecg_ray")
            return Predictions(record_ids=npz["record_ids"], probs=npz["probs"], labels=npz["labels"],
                               label_names=npz["label_names"].tolist(), label_set=str(npz["label_set"]))
    except PredictionsError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        # np.load raises these for truncated or foreign files, and ValueError for pickled arrays.
        raise PredictionsError(f"{location}: corrupt or unreadable predictions file ({exc})") from None
