"""Download PTB-XL 1.0.3 from PhysioNet with the standard library only.

The server is probed first with a short timeout, so an offline machine gets a clear
:class:`~ecg_ray.errors.SourceError` in seconds instead of a hang. Downloads resume: a file
already present with a non-zero size is skipped, and each file is written to ``<name>.part``
and renamed only when complete, so an interrupted run never leaves a truncated file that a
later run would take as finished.
"""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath

from ecg_ray.errors import ConfigError, SourceError

PTBXL_URL = "https://physionet.org/files/ptb-xl/1.0.3/"
METADATA_FILES = ("ptbxl_database.csv", "scp_statements.csv", "LICENSE.txt", "RECORDS")
_RATE_DIRS = {"100": ("records100",), "500": ("records500",), "both": ("records100", "records500")}
_USER_AGENT = "ecg_ray (python urllib)"
_CHUNK = 1 << 16


def download_ptbxl(dest_dir: str | Path, fs_choice: str = "100", timeout: float = 20,
                   progress: bool = True, workers: int = 8) -> dict:
    """Download PTB-XL into ``dest_dir``; ``fs_choice`` is "100", "500" or "both".

    Fetches the two CSVs, LICENSE.txt and RECORDS, then the ``.hea``/``.dat`` pair of every
    record at the chosen rate(s), ``workers`` files at a time (one request per file, so
    parallel requests hide the per-file latency of ~44k small files). Returns
    ``{"path", "downloaded", "skipped", "files"}``. Raises SourceError naming the URL or file
    when the server cannot be reached or a file fails.
    """
    choice = str(fs_choice).strip().lower()
    if choice not in _RATE_DIRS:
        raise ConfigError(f"fs_choice must be '100', '500' or 'both', got {fs_choice!r}")
    # Read the module constant at call time so it can be pointed at a mirror (or a test server).
    base = PTBXL_URL if PTBXL_URL.endswith("/") else PTBXL_URL + "/"
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)

    check_reachable(base, timeout)

    downloaded = skipped = 0
    for name in METADATA_FILES:
        if _fetch(base, name, dest, timeout):
            downloaded += 1
        else:
            skipped += 1

    files = [f"{record}{ext}" for record in _read_records(dest / "RECORDS", _RATE_DIRS[choice])
             for ext in (".hea", ".dat")]
    bar = _progress_bar(len(files), progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
            futures = [pool.submit(_fetch, base, name, dest, timeout) for name in files]
            try:
                for future in as_completed(futures):
                    if future.result():
                        downloaded += 1
                    else:
                        skipped += 1
                    bar.update(1)
            except BaseException:
                # Stop queued downloads at the first failure; finished files stay for the next run.
                for future in futures:
                    future.cancel()
                raise
    finally:
        bar.close()
    return {"path": str(dest), "downloaded": downloaded, "skipped": skipped,
            "files": len(files) + len(METADATA_FILES)}


def check_reachable(base: str, timeout: float) -> None:
    """Probe ``base`` with HEAD (GET if HEAD is refused); raise SourceError if unreachable."""
    host = urllib.parse.urlparse(base).netloc or base
    for method in ("HEAD", "GET"):
        request = urllib.request.Request(base, method=method, headers={"User-Agent": _USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise SourceError(f"{base}: not found on {host} (HTTP 404); "
                                  "check the PTB-XL version or download manually") from None
            # Some servers refuse HEAD (405 etc.): the host answered, so retry with GET.
            if method == "GET":
                raise SourceError(f"{base}: {host} answered HTTP {exc.code} {exc.reason}") from None
        # URLError and socket timeouts are OSErrors; HTTPException covers a garbled reply.
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceError(f"cannot reach {host}: {reason}; check your network or download "
                              f"manually from {PTBXL_URL}") from None


def _read_records(records_file: Path, rate_dirs: tuple[str, ...]) -> list[str]:
    """Record paths from RECORDS for the chosen rate directories, checked to stay inside dest."""
    try:
        lines = records_file.read_text().splitlines()
    except OSError as exc:
        raise SourceError(f"{records_file}: cannot read ({exc})") from None
    records = []
    for line in lines:
        record = line.strip()
        if not record or record.startswith("#"):
            continue
        parts = PurePosixPath(record).parts
        # The list comes from the network: refuse absolute paths and '..' before writing files.
        if PurePosixPath(record).is_absolute() or ".." in parts:
            raise SourceError(f"{records_file}: unsafe record path {record!r}")
        if parts and parts[0] in rate_dirs:
            records.append(record)
    if not records:
        raise SourceError(f"{records_file}: no records under {', '.join(rate_dirs)}/")
    return records


def _fetch(base: str, name: str, dest: Path, timeout: float) -> bool:
    """Download ``base + name`` to ``dest / name``; False when it is already there."""
    target = dest / name
    if target.is_file() and target.stat().st_size > 0:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    url = urllib.parse.urljoin(base, urllib.parse.quote(name))
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
            expected = response.headers.get("Content-Length")
        size = part.stat().st_size
        if expected is not None and expected.isdigit() and int(expected) != size:
            raise SourceError(f"{url}: truncated download ({size} of {expected} bytes); rerun to resume")
        os.replace(part, target)
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"{url}: download failed ({reason}); rerun to resume") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return True


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", desc="PTB-XL", disable=not enabled)
