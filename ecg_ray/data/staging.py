"""Staging directories of stores being prepared, and the removal of those that killed runs left behind.

A store is written into a staging directory and moved into place when complete (see
:mod:`ecg_ray.data.store`): ``.NAME.partial-XXXXXXXX`` beside a local target, or
``$TMPDIR/ecg_ray-store-staging-XXXXXXXX`` for a cloud target. A prepare killed with SIGKILL
cannot remove it, and on real data it is as large as the store. So each staging directory holds
a small owner file (target, host, PID and that process's start time), and the next prepare of the
*same* target removes the staging directories whose owner is gone:

- owner file on this host, PID not running (or running but started at another time: a reused PID);
- no owner file (written by an older ecg_ray, or killed in the instant between creating the
  directory and writing the file), local target only, and untouched since before the running
  process started; the same for ``.NAME.old-XXXXXXXX``, an old store a killed run was deleting.

Staging directories of other targets, of live processes, of other hosts, and cloud staging
directories without an owner file (their target is unknown) are never touched.

``prepare --ray`` to a cloud target writes its chunks into a staging *prefix* beside the target,
``PARENT/.NAME.partial-XXXXXXXX/`` (:func:`remote_staging`), whose first object is the same owner
file. A later prepare of the same target removes it when its owner ran on this host and is gone,
or when nothing under it changed for :data:`REMOTE_STALE_AFTER_S` (its owner was another machine,
say a cluster head since replaced, whose processes this host cannot see).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

OWNER_FILE = ".ecg_ray-owner.json"
CLOUD_STAGING_PREFIX = "ecg_ray-store-staging-"
CLOUD_STORE_DIR = "store"
_SUFFIX = r"[0-9a-f]{8}"
#: a cloud staging prefix of another host is stale once nothing under it changed for this long
REMOTE_STALE_AFTER_S = 24 * 3600.0
# Fallback for "when did this process start" where /proc is unavailable: module import is close to it.
_IMPORTED_AT = time.time()


def process_start(pid: int) -> float | None:
    """Wall-clock start time of process ``pid`` (Linux /proc), or None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5), counted after the ")" that ends the command name
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def this_process_start() -> float:
    return process_start(os.getpid()) or _IMPORTED_AT


def _owner_record(target: str) -> dict:
    return {"target": target, "host": socket.gethostname(), "pid": os.getpid(),
            "process_start": process_start(os.getpid()), "created": time.time()}


def write_owner(directory: Path, target: str) -> None:
    """Mark ``directory`` as the staging directory of ``target`` owned by this process."""
    (Path(directory) / OWNER_FILE).write_text(json.dumps(_owner_record(target)))


def release(directory: Path) -> None:
    """Drop the owner file just before the staging directory becomes the store (or is uploaded)."""
    (Path(directory) / OWNER_FILE).unlink(missing_ok=True)


def local_staging(out: Path) -> Path:
    """A new ``.NAME.partial-XXXXXXXX`` directory beside ``out``, owned by this process."""
    directory = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    write_owner(directory, str(out))
    return directory


def cloud_staging(target: str) -> Path:
    """A new ``$TMPDIR/ecg_ray-store-staging-XXXXXXXX`` directory for a cloud ``target``, owned by this process.

    The store is staged in its subdirectory ``store/`` (:data:`CLOUD_STORE_DIR`), so the owner file
    stays beside it, and keeps marking the directory, while the store uploads.
    """
    directory = Path(tempfile.mkdtemp(prefix=CLOUD_STAGING_PREFIX))
    write_owner(directory, target)
    (directory / CLOUD_STORE_DIR).mkdir()
    return directory


def remote_staging(target: str) -> str:
    """A new staging prefix ``PARENT/.NAME.partial-XXXXXXXX`` beside the cloud ``target``, owned by this process."""
    from ecg_ray import storage

    prefix = storage.join(storage.parent(target), f".{storage.name(target)}.partial-{uuid.uuid4().hex[:8]}")
    storage.write_text(json.dumps(_owner_record(target)), storage.join(prefix, OWNER_FILE))
    return prefix


def _read_owner(directory: Path) -> dict | None:
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _alive(pid: int, started: float | None) -> bool:
    """Whether ``pid`` still runs the process that wrote the owner file (this host only)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # running, as another user
    if started is not None:
        now_started = process_start(pid)
        if now_started is not None and abs(now_started - started) > 2.0:
            return False  # the PID was reused by a later process
    return True


def _last_activity(directory: Path) -> float:
    """Newest modification time of the directory and its subdirectories two levels down.

    A store being written adds chunk files under ``signals/c/``; a store being deleted loses
    entries: either changes one of these directories, so an active one looks recent.
    """
    newest = directory.lstat().st_mtime
    level = [directory]
    for _ in range(2):
        below = []
        for parent in level:
            try:
                with os.scandir(parent) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
                            below.append(Path(entry.path))
            except OSError:
                continue
        level = below
    return newest


def _bytes(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _is_stale(directory: Path, target: str, started: float, *, unmarked_allowed: bool) -> bool:
    owner = _read_owner(directory)
    if owner is None:
        return unmarked_allowed and _last_activity(directory) < started
    if owner.get("target") != target or owner.get("host") != socket.gethostname():
        return False
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    return not _alive(pid, owner.get("process_start"))


def stale_staging(target: str) -> list[Path]:
    """Staging directories of ``target`` (a local path or a URI) left by runs that are gone."""
    from ecg_ray import storage

    started = this_process_start()
    if storage.is_uri(target):
        root = Path(tempfile.gettempdir())
        pattern = re.compile(re.escape(CLOUD_STAGING_PREFIX) + r".+")
        unmarked_allowed = False  # without an owner file, nothing says which target it was for
    else:
        out = Path(target)
        root = out.parent
        pattern = re.compile(re.escape(f".{out.name}.") + rf"(partial|old)-{_SUFFIX}")
        unmarked_allowed = True
    try:
        candidates = [Path(e.path) for e in os.scandir(root)
                      if pattern.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(c for c in candidates if _is_stale(c, target, started, unmarked_allowed=unmarked_allowed))


def _remote_files(prefix: str) -> list:
    """pyarrow ``FileInfo`` of every object under a prefix (size and modification time)."""
    import pyarrow.fs as pafs

    from ecg_ray import storage

    fs, path = storage.filesystem(prefix)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError:
        return []
    return [i for i in infos if i.type == pafs.FileType.File]


def stale_remote_staging(target: str) -> list[str]:
    """Cloud staging prefixes of the cloud ``target`` (``prepare --ray``) left by runs that are gone."""
    from ecg_ray import storage

    pattern = f".{storage.name(target)}.partial-*"
    try:
        candidates = storage.list_dirs(storage.parent(target), pattern)
    except storage.StorageError:
        return []
    stale = []
    for prefix in candidates:
        if not re.fullmatch(re.escape(f".{storage.name(target)}.partial-") + _SUFFIX, storage.name(prefix)):
            continue
        try:
            owner = json.loads(storage.read_text(storage.join(prefix, OWNER_FILE)))
        except (storage.StorageError, ValueError):
            continue  # not marked by ecg_ray: its target is unknown, never touched
        if not isinstance(owner, dict) or owner.get("target") != target:
            continue
        if owner.get("host") == socket.gethostname():
            try:
                gone = not _alive(int(owner["pid"]), owner.get("process_start"))
            except (KeyError, TypeError, ValueError):
                gone = False
        else:
            files = _remote_files(prefix)
            newest = max((i.mtime.timestamp() for i in files if i.mtime is not None), default=0.0)
            gone = time.time() - newest > REMOTE_STALE_AFTER_S
        if gone:
            stale.append(prefix)
    return stale


def remove_stale_staging(target: str) -> tuple[int, int]:
    """Remove ``target``'s stale staging directories (and cloud prefixes); logs and returns (how many, bytes freed)."""
    from ecg_ray import storage

    removed, freed = 0, 0
    for directory in stale_staging(target):
        size = _bytes(directory)
        shutil.rmtree(directory, ignore_errors=True)  # another prepare may be removing it too
        if not os.path.lexists(directory):
            removed, freed = removed + 1, freed + size
    if storage.is_uri(target):
        for prefix in stale_remote_staging(target):
            size = sum(i.size for i in _remote_files(prefix))
            try:
                storage.delete_dir(prefix)
            except storage.StorageError as exc:
                logger.warning("could not remove the stale partial store %s: %s", prefix, exc)
                continue
            removed, freed = removed + 1, freed + size
    if removed:
        logger.warning("removed %d stale partial store(s) of %s from interrupted runs, freed %s",
                       removed, target, human_bytes(freed))
    return removed, freed


def human_bytes(count: int) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as ``du --si`` and cloud consoles show sizes)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
