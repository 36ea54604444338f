"""Guards for every place ecg_ray deletes or replaces something at a location the user named.

The rule (issue #16): ecg_ray replaces only what it can prove it wrote itself, and never something
that holds, or is held by, an input of the same command.

- ``prepare --overwrite`` replaces a *complete ecg_ray store* (its ``manifest.json`` parses and says
  ``"format": "ecg_ray.store"``) or an empty directory, and only when the store neither contains
  nor lies inside an input path. A plain file, a directory of other files, an incomplete store
  and the inputs themselves are refused, naming the path and the reason.
- ``export --out F`` replaces an existing F only when F is an ecg_ray encoder export, never a
  directory.
- ``sweep --output DIR`` writes into DIR only when DIR is new, empty or an ecg_ray sweep directory.
- ``pretrain/evaluate --output DIR`` need DIR to be (or become) a directory, not a file.

Local paths are compared by the identity of the directories they resolve to (device and inode),
so symlinks, ``..`` and case-insensitive file systems cannot hide that two paths are the same.
Cloud URIs are compared as normalized prefixes. Every refusal is an :class:`EcgRayError` with a
one-line message; a refused command has read and written nothing. This module imports no torch,
so the checks run before anything heavy is loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ecg_ray import storage
from ecg_ray.errors import ConfigError, EcgRayError, StoreError

STORE_MANIFEST = "manifest.json"
STORE_FORMAT = "ecg_ray.store"
# Files a store has before its manifest is written: their presence marks an interrupted prepare.
STORE_BODY = ("zarr.json", "records.parquet", "labels.parquet", "signals")
SWEEP_FILE = "sweep.yaml"


# --------------------------------------------------------------------------------------------
# What is at a location
# --------------------------------------------------------------------------------------------

def store_problem(location: str) -> str | None:
    """Why the existing ``location`` is not a complete ecg_ray store, or None when it is one."""
    if storage.is_file(location):
        return "it is a file, not an ecg_ray store"
    manifest = storage.join(location, STORE_MANIFEST)
    if not storage.is_file(manifest):
        body = [name for name in STORE_BODY if storage.exists(storage.join(location, name))]
        if body:
            return f"it is an incomplete ecg_ray store (no {STORE_MANIFEST}: an interrupted prepare or copy)"
        return f"it is a directory that is not an ecg_ray store (no {STORE_MANIFEST})"
    try:
        data = json.loads(storage.read_text(manifest))
    except (ValueError, EcgRayError) as exc:
        return f"its {STORE_MANIFEST} is unreadable ({_one_line(exc)})"
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
        return f"its {STORE_MANIFEST} is not an ecg_ray store manifest"
    return None


def _is_empty_local_dir(location: str) -> bool:
    if storage.is_uri(location):
        return False  # an object-store prefix that exists has objects under it
    try:
        with os.scandir(location) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# --------------------------------------------------------------------------------------------
# How two locations relate
# --------------------------------------------------------------------------------------------

def _identity_chain(path: str) -> list[tuple[int, int]]:
    """(device, inode) of ``path`` (symlinks resolved) and of each of its existing ancestors."""
    chain = []
    current = Path(os.path.realpath(path))
    for candidate in (current, *current.parents):
        try:
            info = os.stat(candidate)
        except OSError:
            continue  # not created yet: its ancestors still say where it would be
        chain.append((info.st_dev, info.st_ino))
    return chain


def relation(target: str, other: str) -> str | None:
    """How ``target`` relates to ``other``: ``"is"``, ``"contains"``, ``"lies inside"`` or None."""
    target, other = storage.normalize(target), storage.normalize(other)
    if storage.is_uri(target) or storage.is_uri(other):
        if storage.is_uri(target) != storage.is_uri(other):
            return None  # a cloud location and a local path never overlap
        if target == other:
            return "is"
        if other.startswith(target + "/"):
            return "contains"
        if target.startswith(other + "/"):
            return "lies inside"
        return None
    target_chain, other_chain = _identity_chain(target), _identity_chain(other)
    if not target_chain or not other_chain:
        return None
    if os.path.exists(target) and os.path.exists(other) and target_chain[0] == other_chain[0]:
        return "is"
    if os.path.exists(target) and target_chain[0] in other_chain:
        return "contains"
    if os.path.exists(other) and other_chain[0] in target_chain:
        return "lies inside"
    # Paths not created yet: compare the resolved spellings.
    real_target, real_other = Path(os.path.realpath(target)), Path(os.path.realpath(other))
    if real_target == real_other:
        return "is"
    if real_target in real_other.parents:
        return "contains"
    if real_other in real_target.parents:
        return "lies inside"
    return None


def input_overlap(target: str, inputs: Iterable[str | os.PathLike | None]) -> str | None:
    """``"it contains the input X"`` (or *is* / *lies inside*) for the first overlapping input, else None."""
    for item in inputs:
        if item is None or str(item) == "":
            continue
        how = relation(target, os.fspath(item))
        if how == "is":
            return f"it is the input {storage.normalize(item)}"
        if how is not None:
            return f"it {how} the input {storage.normalize(item)}"
    return None


def _blocking_ancestor(location: str) -> str | None:
    """The nearest existing ancestor of a local location when it is not a directory (a file)."""
    if storage.is_uri(location):
        return None
    for parent in Path(location).parents:
        if os.path.lexists(parent):
            return None if os.path.isdir(parent) else str(parent)
    return None


# --------------------------------------------------------------------------------------------
# The checks each command runs
# --------------------------------------------------------------------------------------------

def check_store_target(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                       overwrite: bool = False) -> str:
    """Refuse a ``prepare --out`` that would destroy anything but an ecg_ray store; returns ``out`` normalized.

    Runs before a prepare reads its sources, and again right before the old store is replaced.
    """
    out = storage.normalize(out)
    blocking = _blocking_ancestor(out)
    if blocking is not None:
        raise StoreError(f"cannot create {out}: {blocking} is a file, not a directory")
    inputs = list(inputs)
    if not storage.exists(out):
        return out
    problem = None if _is_empty_local_dir(out) else store_problem(out)
    problem = input_overlap(out, inputs) or problem
    if not overwrite:
        if problem is None:
            raise StoreError(f"{out} already exists (use --overwrite to replace it)")
        raise StoreError(f"{out} already exists and {problem}; --overwrite would not replace it either, "
                         "choose another --out")
    if problem is not None:
        raise StoreError(f"refusing to replace {out}: {problem}; --overwrite replaces only a complete "
                         "ecg_ray store that neither holds nor lies inside an input (nothing was changed)")
    return out


def store_inputs(sources: Iterable, *extra: str | os.PathLike | None) -> list[str]:
    """Input paths named by sources' ``describe()`` (``path``, ``labels_csv``, ``exams_csv``) plus ``extra``."""
    found: list[str] = []
    for source in sources:
        described = source.describe()
        for key in ("path", "labels_csv", "exams_csv"):
            value = described.get(key)
            values = value if isinstance(value, list | tuple) else [value]
            found += [str(v) for v in values if v not in (None, "")]
    found += [os.fspath(item) for item in extra if item not in (None, "")]
    return found


def check_file_target(out: str | os.PathLike, *, replaceable: Callable[[str], bool], what: str) -> str:
    """Refuse writing a file at ``out`` unless nothing is there or ``replaceable(out)`` says it is ``what``.

    Returns ``out`` normalized. A directory is never replaced (so no input can be inside what is
    replaced); an existing file is replaced only when it is ``what``, which no input of ours is.
    """
    out = storage.normalize(out)
    blocking = _blocking_ancestor(out)
    if blocking is not None:
        raise EcgRayError(f"cannot write {out}: {blocking} is a file, not a directory")
    if not storage.exists(out):
        return out
    if not storage.is_file(out):
        raise EcgRayError(f"refusing to replace {out}: it is a directory; give a file name for {what}")
    if not replaceable(out):
        raise EcgRayError(f"refusing to replace {out}: the existing file is not {what}; "
                          "move it away or choose another --out")
    return out


def check_output_dir(output: str | os.PathLike, option: str = "--output") -> str:
    """A directory that receives run directories: may be new or a directory, never a file."""
    output = storage.normalize(output)
    blocking = _blocking_ancestor(output)
    if blocking is not None:
        raise ConfigError(f"{option} {output}: {blocking} is a file, not a directory")
    if storage.is_file(output):
        raise ConfigError(f"{option} {output} is a file; give a directory (run directories are created inside it)")
    return output


def sweep_dir_problem(location: str) -> str | None:
    """Why an existing, non-empty ``location`` is not an ecg_ray sweep directory, or None if it is one."""
    import yaml

    spec_file = storage.join(location, SWEEP_FILE)
    if not storage.is_file(spec_file):
        return f"it is a non-empty directory without {SWEEP_FILE}, not an ecg_ray sweep directory"
    try:
        spec = yaml.safe_load(storage.read_text(spec_file))
    except (yaml.YAMLError, UnicodeDecodeError, EcgRayError) as exc:
        return f"its {SWEEP_FILE} is unreadable ({_one_line(exc)})"
    if not isinstance(spec, dict) or not {"kind", "base"} <= set(spec):
        return f"its {SWEEP_FILE} is not an ecg_ray sweep file"
    return None


def check_sweep_dir(sweep_dir: str | os.PathLike) -> str:
    """Refuse a sweep output that exists and is neither empty nor an ecg_ray sweep (which resumes)."""
    sweep_dir = storage.normalize(sweep_dir)
    blocking = _blocking_ancestor(sweep_dir)
    if blocking is not None:
        raise ConfigError(f"sweep output {sweep_dir}: {blocking} is a file, not a directory")
    if not storage.exists(sweep_dir) or _is_empty_local_dir(sweep_dir):
        return sweep_dir
    if storage.is_file(sweep_dir):
        raise ConfigError(f"refusing to write a sweep into {sweep_dir}: it is a file")
    problem = sweep_dir_problem(sweep_dir)
    if problem is not None:
        raise ConfigError(f"refusing to write a sweep into {sweep_dir}: {problem}; choose another --output")
    return sweep_dir
