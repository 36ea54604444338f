"""download_ptbxl against a closed port (fast failure) and a local fake PhysioNet tree."""

from __future__ import annotations

import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ecg_ray.data import download
from ecg_ray.data.download import download_ptbxl
from ecg_ray.errors import ConfigError, SourceError

RECORDS = ["records100/00000/00001_lr", "records100/00000/00002_lr",
           "records500/00000/00001_hr", "records500/00000/00002_hr"]


@pytest.fixture()
def fake_physionet(tmp_path, monkeypatch):
    """Serve a tiny PTB-XL tree on 127.0.0.1; yields (requested paths, tree root)."""
    root = tmp_path / "server"
    root.mkdir()
    (root / "ptbxl_database.csv").write_text("ecg_id,patient_id\n1,10\n2,20\n")
    (root / "scp_statements.csv").write_text(",description\nNORM,normal ECG\n")
    (root / "LICENSE.txt").write_text("CC-BY 4.0\n")
    (root / "RECORDS").write_text("\n".join(RECORDS) + "\n")
    for record in RECORDS:
        path = root / record
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(path.name + ".hea").write_text(f"{path.name} 12 100 1000\n")
        path.with_name(path.name + ".dat").write_bytes(bytes(range(256)) * 4)

    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(download, "PTBXL_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        yield requested, root
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "PTBXL_URL", "http://127.0.0.1:9/")
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"cannot reach 127\.0\.0\.1:9: .*check your network"):
        download_ptbxl(tmp_path / "ptbxl", timeout=3, progress=False)
    assert time.monotonic() - start < 5
    assert not any((tmp_path / "ptbxl").rglob("*.*"))


def test_bad_choice(tmp_path):
    with pytest.raises(ConfigError, match="fs_choice"):
        download_ptbxl(tmp_path, fs_choice="250", progress=False)


def _files(dest):
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def test_downloads_chosen_rate_then_skips(tmp_path, fake_physionet):
    requested, root = fake_physionet
    dest = tmp_path / "ptbxl"
    result = download_ptbxl(dest, fs_choice="100", timeout=5, progress=False)

    expected = sorted(["LICENSE.txt", "RECORDS", "ptbxl_database.csv", "scp_statements.csv"]
                      + [f"{r}{ext}" for r in RECORDS[:2] for ext in (".hea", ".dat")])
    assert _files(dest) == expected
    assert result == {"path": str(dest), "downloaded": 8, "skipped": 0, "files": 8}
    for name in expected:
        assert (dest / name).read_bytes() == (root / name).read_bytes()
    assert not list(dest.rglob("*.part"))

    requested.clear()
    again = download_ptbxl(dest, fs_choice="100", timeout=5, progress=False)
    assert again["downloaded"] == 0 and again["skipped"] == 8
    assert requested == []  # only the HEAD probe went out

    # An empty leftover is fetched again; "both" adds the 500 Hz files only.
    (dest / RECORDS[0]).with_suffix(".dat").write_bytes(b"")
    both = download_ptbxl(dest, fs_choice="both", timeout=5, progress=False)
    assert both["downloaded"] == 5 and both["skipped"] == 7
    assert _files(dest) == sorted(expected + [f"{r}{ext}" for r in RECORDS[2:] for ext in (".hea", ".dat")])


def test_missing_file_names_url(tmp_path, fake_physionet):
    _, root = fake_physionet
    (root / RECORDS[1]).with_name("00002_lr.dat").unlink()
    with pytest.raises(SourceError, match=r"00002_lr\.dat: HTTP 404"):
        download_ptbxl(tmp_path / "ptbxl", timeout=5, progress=False, workers=1)
    assert not list((tmp_path / "ptbxl").rglob("*.part"))
