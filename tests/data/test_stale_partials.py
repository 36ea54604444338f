"""Staging directories left by a killed ``prepare`` are removed by the next prepare of the same target only.

Real processes make the partials: a ``prepare`` SIGKILLed mid-run, processes that create a
staging directory and exit, and one that stays alive holding its own. Only the dead ones of the
same target go; the live one, those of another target and recent unmarked ones stay.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ecg_ray.cli import main
from ecg_ray.data import staging
from ecg_ray.data.staging import OWNER_FILE, human_bytes
from tests.cli import run_json

# A process that creates a staging directory for argv[1], prints it, and then exits or (HOLD) waits.
CREATE = ("import sys; from pathlib import Path; from ecg_ray.data import staging; "
          "target = sys.argv[1]; "
          "path = staging.cloud_staging(target) if '://' in target else staging.local_staging(Path(target)); "
          "(path / 'payload.bin').write_bytes(bytes(int(sys.argv[2]))); print(path, flush=True)")
HOLD = CREATE + "; sys.stdin.read()"


def make_partial(target: str, size: int = 1000, env: dict | None = None) -> Path:
    """A staging directory whose owner (a real process) has exited."""
    result = subprocess.run([sys.executable, "-c", CREATE, target, str(size)], capture_output=True, text=True,
                            check=True, env=env, timeout=120)
    return Path(result.stdout.strip())


def hold_partial(target: str, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
    """A staging directory whose owner stays alive until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, target, "1000"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    return proc, Path(proc.stdout.readline().strip())


def unmarked(path: Path, age_s: float) -> Path:
    """A staging directory without owner file (older ecg_ray), last touched ``age_s`` seconds ago."""
    (path / "signals" / "c").mkdir(parents=True)
    (path / "signals" / "c" / "0").write_bytes(bytes(3000))
    stamp = time.time() - age_s
    for directory in (path / "signals" / "c", path / "signals", path):
        os.utime(directory, (stamp, stamp))
    return path


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def kill_prepare_mid_run(out: Path) -> Path:
    """Start ``ecg-ray prepare synthetic`` and SIGKILL it once its partial store holds signal chunks."""
    code = "import sys; from ecg_ray.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "prepare", "synthetic", "--records", "100000",
                             "--workers", "1", "--no-progress", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            partials = list(out.parent.glob(f".{out.name}.partial-*"))
            if partials and list((partials[0] / "signals").glob("c/*/*")):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("prepare never wrote a chunk")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return partials[0]


def test_rerun_removes_only_dead_partials_of_the_same_target(tmp_path, caplog, capsys):
    out = tmp_path / "store"
    killed = kill_prepare_mid_run(out)
    assert (killed / OWNER_FILE).exists() and not out.exists()
    exited = make_partial(str(out), size=5000)
    other_target = make_partial(str(tmp_path / "store2"))  # dead, but of another target: kept
    old_unmarked = unmarked(tmp_path / f".{out.name}.partial-0123abcd", age_s=3600)
    old_leftover = unmarked(tmp_path / f".{out.name}.old-0123abcd", age_s=3600)  # an old store being deleted
    fresh_unmarked = unmarked(tmp_path / f".{out.name}.partial-89abcdef", age_s=0)  # may be in use: kept
    live, live_partial = hold_partial(str(out))
    try:
        stale = [killed, exited, old_unmarked, old_leftover]
        freed = sum(size(p) for p in stale)
        assert size(killed) > 1_000_000  # a real store's worth of chunks
        with caplog.at_level(logging.WARNING, logger="ecg_ray.data.staging"):
            run_json(capsys, "prepare", "synthetic", "--records", 12, "--out", out, "--no-progress")
        assert f"removed 4 stale partial store(s) of {out} from interrupted runs, freed {human_bytes(freed)}" \
            in caplog.text
        assert not any(p.exists() for p in stale)
        assert live_partial.exists() and (live_partial / "payload.bin").exists()
        assert other_target.exists() and fresh_unmarked.exists()
        # a second run finds nothing more to remove, and says nothing
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ecg_ray.data.staging"):
            run_json(capsys, "prepare", "synthetic", "--records", 12, "--out", out, "--no-progress", "--overwrite")
        assert "stale partial" not in caplog.text and live_partial.exists()
    finally:
        live.stdin.close()
        live.wait(timeout=60)
        live.stdout.close()


def test_a_refused_prepare_removes_nothing(tmp_path, capsys):
    out = tmp_path / "store"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    dead = make_partial(str(out))
    assert main(["prepare", "synthetic", "--records", "12", "--out", str(out), "--overwrite", "--no-progress"]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert dead.exists()  # nothing at all is changed by a refused run


def test_reused_pid_is_not_an_owner(tmp_path):
    """An owner file naming a PID that now belongs to another process (started later) is stale."""
    out = tmp_path / "store"
    partial = staging.local_staging(out)  # owned by this (live) process: not stale
    assert staging.stale_staging(str(out)) == []
    owner = (partial / OWNER_FILE).read_text().replace('"process_start": ', '"process_start": 1000.0, "x": ')
    (partial / OWNER_FILE).write_text(owner)
    if staging.process_start(os.getpid()) is None:
        pytest.skip("no /proc: process start times unknown, a reused PID counts as alive")
    assert staging.stale_staging(str(out)) == [partial]


def test_cloud_staging_of_the_same_target_only(s3_bucket, tmp_path, monkeypatch, caplog, capsys):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # this process's $TMPDIR
    env = {**os.environ, "TMPDIR": str(scratch)}
    target = f"{s3_bucket}/stores/synthetic"
    dead = make_partial(target, size=7000, env=env)
    assert dead.parent == scratch and (dead / OWNER_FILE).exists() and dead.name.startswith("ecg_ray-store-staging-")
    other = make_partial(f"{s3_bucket}/stores/synthetic2", env=env)
    no_owner = unmarked(scratch / "ecg_ray-store-staging-abcdefgh", age_s=3600)  # target unknown: kept
    live, live_partial = hold_partial(target, env=env)
    try:
        with caplog.at_level(logging.WARNING, logger="ecg_ray.data.staging"):
            assert run_json(capsys, "prepare", "synthetic", "--records", 12, "--out", target,
                            "--no-progress")["records"] == 12
        assert f"removed 1 stale partial store(s) of {target}" in caplog.text
        assert not dead.exists()
        assert other.exists() and no_owner.exists() and live_partial.exists()
        assert sorted(p.name for p in scratch.iterdir()) == sorted(
            [other.name, no_owner.name, live_partial.name])  # its own staging is gone too
    finally:
        live.stdin.close()
        live.wait(timeout=60)
        live.stdout.close()
