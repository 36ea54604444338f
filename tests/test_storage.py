"""ecg_ray.storage: location strings, and the same file operations on local disk and on S3.

S3 is a moto server on 127.0.0.1 (see conftest ``s3_bucket``), reached through the real pyarrow S3
client, so these tests exercise the code path a cluster uses with ``s3://`` locations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ecg_ray import storage
from ecg_ray.storage import StorageError


def test_uri_locations_keep_their_scheme_and_drop_trailing_slashes():
    assert storage.is_uri("s3://bucket/runs") and storage.is_uri("gs://b/x") and storage.is_uri("abfs://c/x")
    assert not storage.is_uri("/tmp/x") and not storage.is_uri("runs") and not storage.is_uri("file:///tmp/x")
    assert storage.normalize("S3://bucket/runs/") == "s3://bucket/runs"
    assert storage.join("s3://bucket/runs/", "simclr-1", "checkpoint_000001") == \
        "s3://bucket/runs/simclr-1/checkpoint_000001"
    assert storage.name("s3://bucket/runs/simclr-1") == "simclr-1"
    assert storage.parent("s3://bucket/runs/simclr-1") == "s3://bucket/runs"


def test_local_locations_become_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("runs") == str(tmp_path / "runs")
    assert storage.normalize(f"file://{tmp_path}/runs") == str(tmp_path / "runs")
    assert storage.join("runs", "a") == str(tmp_path / "runs" / "a")
    assert storage.name(tmp_path / "runs" / "a") == "a"
    assert storage.parent(tmp_path / "runs" / "a") == str(tmp_path / "runs")


@pytest.mark.parametrize("bad", ["s3://", "s3:///"])
def test_uri_without_bucket_is_rejected(bad):
    with pytest.raises(StorageError, match="no bucket or path"):
        storage.normalize(bad)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket") + "/root"


def test_files_roundtrip_list_and_delete(root):
    assert not storage.exists(root)
    storage.write_text("hello", storage.join(root, "a.txt"))
    storage.write_bytes(b"\x00\x01", storage.join(root, "sub", "b.bin"))
    storage.write_text("x", storage.join(root, "checkpoint_000001", "state.pt"))
    assert storage.read_text(storage.join(root, "a.txt")) == "hello"
    assert storage.read_bytes(storage.join(root, "sub", "b.bin")) == b"\x00\x01"
    assert storage.is_dir(root) and storage.is_dir(storage.join(root, "sub"))
    assert storage.is_file(storage.join(root, "a.txt")) and not storage.is_file(storage.join(root, "sub"))
    assert list(storage.list_files(root)) == [("a.txt", 5), ("checkpoint_000001/state.pt", 1), ("sub/b.bin", 2)]
    assert storage.list_dirs(root, "checkpoint_*") == [storage.join(root, "checkpoint_000001")]
    storage.write_text("bye", storage.join(root, "a.txt"))  # overwrite in place
    assert storage.read_text(storage.join(root, "a.txt")) == "bye"
    storage.delete_dir(root)
    assert not storage.exists(root)


def test_missing_file_error_names_the_location(root):
    missing = storage.join(root, "nope.json")
    with pytest.raises(StorageError, match=f"{missing}: not found"):
        storage.read_text(missing)


def test_local_write_leaves_no_temporary_files(tmp_path):
    storage.write_bytes(b"abc", tmp_path / "x" / "f.bin")
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["f.bin"]


def test_upload_dir_copies_the_named_file_last(tmp_path, s3_bucket, monkeypatch):
    local = tmp_path / "tree"
    (local / "signals" / "c").mkdir(parents=True)
    for name in ("manifest.json", "records.parquet", "signals/c/0"):
        (local / name).write_text(name)
    order = []
    real = storage.filesystem

    def spy(location):
        fs, path = real(location)

        class Recording:
            def open_output_stream(self, target):
                order.append(Path(target).name)
                return fs.open_output_stream(target)
        return Recording(), path

    monkeypatch.setattr(storage, "filesystem", spy)
    storage.upload_dir(local, f"{s3_bucket}/store", last=("manifest.json",))
    monkeypatch.undo()
    assert order[-1] == "manifest.json" and sorted(order) == ["0", "manifest.json", "records.parquet"]
    assert storage.read_text(f"{s3_bucket}/store/signals/c/0") == "signals/c/0"


class ForeignObject:
    """Anything but tensors and plain containers: weights_only loading must refuse it."""


def test_torch_load_from_s3_is_weights_only(s3_bucket):
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.arange(3)}, buffer)
    storage.write_bytes(buffer.getvalue(), f"{s3_bucket}/w.pt")
    assert torch.equal(storage.torch_load(f"{s3_bucket}/w.pt")["w"], torch.arange(3))

    buffer = io.BytesIO()
    torch.save({"obj": ForeignObject()}, buffer)  # pickled code must be refused, as for local files
    storage.write_bytes(buffer.getvalue(), f"{s3_bucket}/evil.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        storage.torch_load(f"{s3_bucket}/evil.pt")
