"""Where stores, runs and encoders live: a local path or a cloud URI (s3://, gs://, abfs://, hdfs://).

Every file the package reads or writes outside a worker's scratch space goes through these
helpers, so ``--output runs`` on a laptop and ``--output s3://bucket/runs`` on a cluster run the
same code. Files go through ``pyarrow.fs`` - the layer Ray Train itself uses for
``RunConfig(storage_path=...)`` - so checkpoints, run configs and stores resolve credentials and
endpoints the same way (instance profile, ``AWS_*`` / ``GOOGLE_APPLICATION_CREDENTIALS``
environment, ``AWS_ENDPOINT_URL`` for S3-compatible servers). zarr arrays are read through
obstore, which follows the same environment variables.

A location is a plain string: a URI keeps its scheme, a local path is made absolute (``file://``
URIs become local paths), so a location saved in a config means the same thing on every node.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from ecg_ray.errors import EcgRayError


class StorageError(EcgRayError):
    """A location cannot be reached, read or written."""


def is_uri(location: str | os.PathLike) -> bool:
    """True for ``scheme://...`` locations other than ``file://`` (those are local paths)."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme.lower() != "file"


def normalize(location: str | os.PathLike) -> str:
    """A URI without a trailing slash, or an absolute local path."""
    text = os.fspath(location)
    if is_uri(text):
        scheme, _, rest = text.partition("://")
        rest = rest.rstrip("/")
        if not rest.split("?")[0]:
            raise StorageError(f"{text}: no bucket or path after {scheme}://")
        return f"{scheme.lower()}://{rest}"
    if text.startswith("file://"):
        text = text[len("file://"):]
    return str(Path(text).expanduser().resolve())


def join(base: str | os.PathLike, *parts: str) -> str:
    base = normalize(base)
    if is_uri(base):
        return "/".join([base, *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def name(location: str | os.PathLike) -> str:
    """Last component of a location (a run directory's name)."""
    return PurePosixPath(normalize(location).split("://", 1)[-1]).name


def parent(location: str | os.PathLike) -> str:
    location = normalize(location)
    if is_uri(location):
        scheme, _, rest = location.partition("://")
        head = rest.rsplit("/", 1)[0] if "/" in rest else rest
        return f"{scheme}://{head}"
    return str(Path(location).parent)


def filesystem(location: str | os.PathLike):
    """``(pyarrow.fs.FileSystem, path within it)`` for a location."""
    import pyarrow.fs as pafs

    location = normalize(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), location
    scheme, _, rest = location.partition("://")
    bucket, _, key = rest.partition("/")
    try:
        if scheme in _BUCKET_SCHEMES and "?" not in rest:
            # One client per bucket: building one resolves the bucket's region (a request) each time.
            return _bucket_filesystem(scheme, bucket), f"{bucket}/{key}".rstrip("/")
        return pafs.FileSystem.from_uri(location)
    except (OSError, ValueError, TypeError) as exc:
        raise StorageError(f"{location}: cannot open this location ({exc})") from None


# Schemes whose pyarrow path is "bucket/key" (for others, e.g. hdfs://host:port/path, ask pyarrow).
_BUCKET_SCHEMES = ("s3", "gs", "gcs")


@functools.lru_cache(maxsize=32)
def _bucket_filesystem(scheme: str, bucket: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]


def _info(location: str):
    fs, path = filesystem(location)
    try:
        return fs, path, fs.get_file_info(path)
    except OSError as exc:
        raise StorageError(f"{location}: {exc}") from None


def exists(location: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    return _info(location)[2].type != pafs.FileType.NotFound


def is_dir(location: str | os.PathLike) -> bool:
    """A directory; on object stores, any prefix that has objects under it."""
    import pyarrow.fs as pafs

    fs, path, info = _info(location)
    return info.type == pafs.FileType.Directory


def is_file(location: str | os.PathLike) -> bool:
    import pyarrow.fs as pafs

    return _info(location)[2].type == pafs.FileType.File


def read_bytes(location: str | os.PathLike) -> bytes:
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise StorageError(f"{normalize(location)}: not found") from None
    except OSError as exc:
        raise StorageError(f"{normalize(location)}: cannot read ({exc})") from None


def read_text(location: str | os.PathLike) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes(data: bytes, location: str | os.PathLike) -> None:
    """Write a whole file so that readers see the old content or the new, never a part.

    Local files are written under a temporary name, synced and renamed; an object-store PUT is
    atomic by itself (the object appears only once the upload completes).
    """
    location = normalize(location)
    if not is_uri(location):
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # never leave a half-written file behind
            raise
        return
    fs, path = filesystem(location)
    try:
        with fs.open_output_stream(path) as f:
            f.write(data)
    except OSError as exc:
        raise StorageError(f"{location}: cannot write ({exc})") from None


def write_text(text: str, location: str | os.PathLike) -> None:
    write_bytes(text.encode("utf-8"), location)


def list_files(location: str | os.PathLike) -> Iterator[tuple[str, int]]:
    """``(relative POSIX path, size)`` of every file under a directory, sorted."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise StorageError(f"{normalize(location)}: cannot list ({exc})") from None
    root = path.rstrip("/") + "/"
    files = [(i.path[len(root):], i.size) for i in infos if i.type == pafs.FileType.File]
    return iter(sorted(files))


def list_dirs(location: str | os.PathLike, pattern: str = "*") -> list[str]:
    """Locations of the immediate subdirectories whose name matches ``pattern``."""
    import pyarrow.fs as pafs

    fs, path = filesystem(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    except OSError as exc:
        raise StorageError(f"{normalize(location)}: cannot list ({exc})") from None
    names = sorted(PurePosixPath(i.path).name for i in infos if i.type == pafs.FileType.Directory)
    return [join(location, n) for n in names if fnmatch.fnmatch(n, pattern)]


def open_input(location: str | os.PathLike):
    """A readable binary file object (for streaming hashes or pyarrow readers)."""
    fs, path = filesystem(location)
    try:
        return fs.open_input_file(path)
    except FileNotFoundError:
        raise StorageError(f"{normalize(location)}: not found") from None
    except OSError as exc:
        raise StorageError(f"{normalize(location)}: cannot read ({exc})") from None


def read_parquet(location: str | os.PathLike):
    """A Parquet file as a pandas DataFrame.

    Arrow's allocator keeps the pages of the decoded table after the strings have been copied into
    Python objects; they are handed back to the system, which about halves what a 1M-row records
    table costs a driver or worker (282 -> 152 bytes per row measured for a records table's columns).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = filesystem(location)
    try:
        frame = pq.read_table(path, filesystem=fs).to_pandas()
        pa.default_memory_pool().release_unused()
        return frame
    except FileNotFoundError:
        raise StorageError(f"{normalize(location)}: not found") from None
    except OSError as exc:
        raise StorageError(f"{normalize(location)}: cannot read ({exc})") from None


def upload_file(local: str | os.PathLike, location: str | os.PathLike) -> None:
    """Copy one local file to a location, streamed in 16 MiB blocks (an object appears when complete)."""
    fs, path = filesystem(location)
    try:
        with open(local, "rb") as src, fs.open_output_stream(path) as dst:
            for block in iter(lambda: src.read(1 << 24), b""):
                dst.write(block)
    except OSError as exc:
        raise StorageError(f"{normalize(location)}: cannot upload ({exc})") from None


def write_blocks(blocks, location: str | os.PathLike) -> None:
    """Write a file from an iterable of byte blocks; on an object store the object appears when complete.

    Local files go through a temporary name and a rename, so a retried writer never leaves a half-written file.
    """
    location = normalize(location)
    if not is_uri(location):
        path = Path(location)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        try:
            # No mkdir: a writer whose directory was removed (an aborted run) fails instead of recreating it.
            with open(tmp, "wb") as f:
                for block in blocks:
                    f.write(block)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    fs, path = filesystem(location)
    try:
        with fs.open_output_stream(path) as f:
            for block in blocks:
                f.write(block)
    except OSError as exc:
        raise StorageError(f"{location}: cannot write ({exc})") from None


def upload_dir(local: str | os.PathLike, location: str | os.PathLike, last: tuple[str, ...] = (),
               progress: bool = False, threads: int = 8) -> None:
    """Copy a local directory tree to a location; files named in ``last`` are copied after all others.

    Readers treat a directory as complete once its ``last`` file (a manifest) exists, so copying
    it last keeps a partly uploaded directory from ever looking complete. Other files go up
    ``threads`` at a time (object stores reward parallel requests; pyarrow releases the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    local = Path(local)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    first = [p for p in files if p.name not in last]
    final = [p for p in files if p.name in last]
    fs, root = filesystem(location)
    bar = tqdm(total=sum(p.stat().st_size for p in files), unit="B", unit_scale=True, mininterval=1.0,
               desc=f"upload {name(location)}", disable=not progress)

    def copy(path: Path) -> None:
        rel = path.relative_to(local).as_posix()
        try:
            with open(path, "rb") as src, fs.open_output_stream(f"{root}/{rel}") as dst:
                for block in iter(lambda f=src: f.read(1 << 24), b""):
                    dst.write(block)
                    bar.update(len(block))
        except OSError as exc:
            raise StorageError(f"{join(location, rel)}: cannot upload ({exc})") from None

    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for _ in pool.map(copy, first):  # re-raises the first failure
                pass
        for path in final:
            copy(path)
    finally:
        bar.close()


def read_range(location: str | os.PathLike, offset: int, nbytes: int) -> bytes:
    """``nbytes`` bytes of a file from ``offset`` (one ranged GET on an object store)."""
    fs, path = filesystem(location)
    try:
        with fs.open_input_file(path) as f:
            data = f.read_at(nbytes, offset)
    except FileNotFoundError:
        raise StorageError(f"{normalize(location)}: not found") from None
    except OSError as exc:
        raise StorageError(f"{normalize(location)}: cannot read ({exc})") from None
    if len(data) != nbytes:
        raise StorageError(f"{normalize(location)}: {len(data)} bytes at {offset}, expected {nbytes} (truncated?)")
    return data


def copy_files(pairs: list[tuple[str, str]], *, threads: int = 32, progress: bool = False,
               desc: str = "copy") -> None:
    """Copy files within one file system: ``(source, destination)`` locations.

    On S3 and GCS each copy is server-side (CopyObject / rewrite): no byte passes through this
    machine, so ``threads`` concurrent requests cost little here. Re-raises the first failure.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    if not pairs:
        return
    fs, _ = filesystem(pairs[0][0])

    def copy(pair: tuple[str, str]) -> None:
        source, destination = (filesystem(location)[1] for location in pair)
        try:
            fs.copy_file(source, destination)
        except OSError as exc:
            raise StorageError(f"{pair[1]}: cannot copy from {pair[0]} ({exc})") from None

    with tqdm(total=len(pairs), unit="file", mininterval=1.0, desc=desc, disable=not progress) as bar, \
            ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for _ in pool.map(copy, pairs):
            bar.update(1)


def delete_file(location: str | os.PathLike) -> None:
    fs, path = filesystem(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"{normalize(location)}: cannot delete ({exc})") from None


def delete_dir(location: str | os.PathLike) -> None:
    fs, path = filesystem(location)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"{normalize(location)}: cannot delete ({exc})") from None


def torch_load(location: str | os.PathLike, map_location="cpu"):
    """``torch.load(..., weights_only=True)`` from any location."""
    import torch

    location = normalize(location)
    source = location if not is_uri(location) else io.BytesIO(read_bytes(location))
    return torch.load(source, map_location=map_location, weights_only=True)


def zarr_store(location: str | os.PathLike, read_only: bool = True):
    """What ``zarr.open_array`` takes for a location: a local path, or an obstore-backed store."""
    location = normalize(location)
    if not is_uri(location):
        return location
    try:
        from obstore.store import from_url
        from zarr.storage import ObjectStore
    except ImportError as exc:  # obstore is a dependency; a broken install should say so
        raise StorageError(f"{location}: reading zarr from cloud storage needs obstore ({exc})") from None
    try:
        return ObjectStore(from_url(location), read_only=read_only)
    except Exception as exc:  # obstore raises its own exception types for bad URLs/config
        raise StorageError(f"{location}: cannot open for zarr ({exc})") from None
