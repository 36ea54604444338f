"""Failures inside Ray Train workers, told in one line; the full trace kept in the run directory.

``TorchTrainer.fit()`` (Ray Train 2.x) raises ``WorkerGroupError`` when a worker's ``train_func``
raises: its message holds every worker's traceback, and its ``worker_failures`` maps each failed
rank to the exception that rank raised (unpickled in the driver). Errors of the trainer itself
come as ``ControllerError`` (``controller_failure``), and an exception raised in a Ray task (a
Ray Data read task) reaches the worker as a ``RayTaskError`` whose ``cause`` is the original.

:func:`training_failure` unwraps those layers: an ``EcgRayError`` found inside (a NaN loss, a
corrupt checkpoint, a corrupt store chunk) is told with its own message; anything else as its
type and first line. Either way the message names the rank and ``RUN/error.log``, which gets
the complete text Ray gave (every worker's traceback) under a timestamp.
"""

from __future__ import annotations

import time
import traceback

from ecg_ray import storage
from ecg_ray.errors import EcgRayError

#: the run directory's log of failures (appended: a resumed run keeps the earlier ones)
ERROR_LOG = "error.log"
#: the run directory's log of warnings (a checkpoint skipped on resume, a collapsed representation)
WARNINGS_LOG = "warnings.log"
#: attributes by which Ray's exceptions carry the exception they wrap
_WRAPPED = ("controller_failure", "cause", "_base_exc")


class TrainingError(EcgRayError):
    """A run stopped inside Ray Train; the message is one line, the traceback is in the run's error.log."""


def append_run_log(run_dir: str, name: str, text: str) -> str | None:
    """Append a timestamped entry to ``RUN/name``; returns its location, None if it cannot be written.

    Best effort: a log that cannot be written (a read-only or unreachable run directory) must not
    hide the error being reported. Read and rewritten whole, as object stores cannot append.
    """
    path = storage.join(run_dir, name)
    entry = f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n{text.rstrip()}\n\n"
    try:
        previous = storage.read_text(path) if storage.exists(path) else ""
        storage.write_text(previous + entry, path)
    except Exception:  # noqa: BLE001 - see docstring
        return None
    return path


def one_line(text: object) -> str:
    """The first non-empty line of ``text`` (a message Ray may have extended with a traceback)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _unwrap(exc: BaseException) -> BaseException | None:
    """The exception a Ray wrapper carries (None if ``exc`` wraps nothing)."""
    fields = getattr(exc, "__dict__", {})
    for attr in _WRAPPED:
        inner = fields.get(attr)
        if isinstance(inner, BaseException) and inner is not exc:
            return inner
    return None


def _is_wrapper(exc: BaseException) -> bool:
    from ray.exceptions import RayTaskError

    return isinstance(exc, RayTaskError) or _unwrap(exc) is not None


def find_cause(exc: BaseException) -> tuple[int | None, BaseException]:
    """(failed worker rank or None, the exception to tell the user) behind a Ray Train failure.

    Prefers an ``EcgRayError`` anywhere in the chain (it already names the file or key); else the
    first exception that is not one of Ray's wrappers, on the lowest failed rank.
    """
    rank: int | None = None
    current: BaseException | None = exc
    first_plain: BaseException | None = None
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict) and failures:
            ranks = sorted(failures)
            # The rank whose failure is ours when there is one: the others often only lost a peer.
            rank = next((r for r in ranks if _ours(failures[r]) is not None), ranks[0])
            current = failures[rank]
            continue
        if isinstance(current, EcgRayError) and not _is_wrapper(current):
            return rank, current
        if first_plain is None and not _is_wrapper(current) and not hasattr(current, "worker_failures"):
            first_plain = current
        current = _unwrap(current) or current.__cause__ or current.__context__
    return rank, first_plain if first_plain is not None else exc


def _ours(exc: BaseException) -> EcgRayError | None:
    _, cause = find_cause(exc)
    return cause if isinstance(cause, EcgRayError) else None


def training_failure(exc: BaseException, run_dir: str) -> TrainingError:
    """A one-line :class:`TrainingError` for a failed ``fit()``; the full trace goes to RUN/error.log."""
    log = append_run_log(run_dir, ERROR_LOG, "".join(traceback.format_exception(exc)))
    rank, cause = find_cause(exc)
    where = f"worker {rank}" if rank is not None else "Ray Train"
    see = f"full traceback in {log}" if log else "the traceback could not be written to the run directory"
    if isinstance(cause, EcgRayError):
        return TrainingError(f"{one_line(cause)} ({where}; {see})")
    return TrainingError(f"training failed in {where}: {type(cause).__name__}: {one_line(cause)} ({see})")
