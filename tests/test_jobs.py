"""CLI commands run as Ray jobs: ``ray job submit --working-dir . -- ecg-ray pretrain ...`` on a real cluster.

The test starts its own head node with ``ray start --head`` on 127.0.0.1 (free ports, its own temp dir,
token authentication the documented way: ``RAY_AUTH_MODE=token`` and a token file named by
``RAY_AUTH_TOKEN_PATH``), checks ``ray status``, submits a one-epoch SimCLR run with ``ray job submit``,
waits for SUCCEEDED, reads the JSON summary from ``ray job logs`` and checks the checkpoint on disk.
It never touches the session-wide ``ray_session`` instance from conftest.

Why the cluster is not stopped with ``ray stop``: ``ray stop`` has no address option; it signals every
raylet, gcs_server, dashboard and worker of the user on the machine, so it would kill the ``ray_session``
instance of the same pytest run and any other Ray running beside the tests (tests/netns.py isolates the
network, not the processes). Instead every process of this cluster carries a unique marker variable in its
environment (Ray hands its environment on from ``ray start`` to GCS, raylet, dashboard, agents, workers,
the job supervisor and the job's driver), and teardown signals exactly the processes with that marker,
plus their descendants, in ``ray stop``'s order (raylet, the rest, GCS last), then SIGKILLs what is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: `ray` and `ecg-ray` (the job's entrypoint) live here
MARKER = "ECG_RAY_TEST_CLUSTER"
# .venv, demo_out, runs, caches are skipped through .gitignore, which `ray job submit` honours for the
# working_dir upload; .git is not in .gitignore (git never lists itself) and is far too big to upload.
RUNTIME_ENV = {"excludes": [".git"]}


@dataclass
class Cluster:
    root: Path  # --temp-dir; also holds the token file
    env: dict[str, str]  # what every `ray` client command of the test runs with
    gcs_address: str  # for `ray status --address`
    dashboard_url: str  # for `ray job ... --address`


def _free_ports(n: int) -> list[int]:
    # All sockets stay open until all ports are read, so the n ports are distinct.
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ray(cluster: Cluster, *args: str, timeout: float, cwd: Path | None = None
         ) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=cluster.env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _tail(proc: subprocess.CompletedProcess, chars: int = 4000) -> str:
    return (f"rc={proc.returncode}\n--- stdout ---\n{proc.stdout[-chars:]}"
            f"\n--- stderr ---\n{proc.stderr[-chars:]}")


def _marked_pids(marker: bytes) -> dict[int, str]:
    """pid -> command name of every live process with ``marker`` in its environment, and its descendants."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    marked: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            # "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
            state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
            if state == "Z":  # a zombie is already dead; its environ reads empty anyway
                continue
            parents[pid], names[pid] = int(ppid), stat[stat.index("(") + 1:stat.rindex(")")]
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                marked.add(pid)
        except (OSError, ValueError):  # gone meanwhile, or another user's process
            continue
    # Descendants too, in case some child was started with a cleaned environment.
    found, grew = set(marked), True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return {pid: names[pid] for pid in found if pid != os.getpid()}


def _signal_and_wait(pids: list[int], sig: int, marker: bytes, grace: float) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and set(pids) & set(_marked_pids(marker)):
        time.sleep(0.2)


def stop_cluster(marker: bytes, grace: float = 10.0) -> list[int]:
    """Stop only the processes of one cluster; returns the pids that had to be SIGKILLed."""
    if not _marked_pids(marker):
        return []
    # Like `ray stop`: raylet first (else its agents complain and exit on their own), GCS last.
    for group in (lambda n: n == "raylet", lambda n: n not in ("raylet", "gcs_server"), lambda n: True):
        pids = [pid for pid, name in _marked_pids(marker).items() if group(name)]
        _signal_and_wait(pids, signal.SIGTERM, marker, grace)
    left = list(_marked_pids(marker))
    _signal_and_wait(left, signal.SIGKILL, marker, 5.0)
    return left


@pytest.fixture
def ray_cluster() -> Iterator[Cluster]:
    """A separate token-authenticated head node (2 CPUs), stopped in teardown even when the test fails."""
    if not Path("/proc/self/environ").exists():
        pytest.skip("finding this cluster's processes for a targeted stop needs Linux /proc")
    # A short temp dir under /tmp: Ray puts unix sockets in <temp-dir>/session_<date>_<pid>/sockets/,
    # and a pytest tmp_path would push them past the 107-byte AF_UNIX path limit.
    root = Path(tempfile.mkdtemp(prefix="ecgjob-", dir="/tmp"))
    token = root / "token"
    token.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
    token.chmod(0o600)
    marker = f"{MARKER}={root}"
    env = {k: v for k, v in os.environ.items()
           # RAY_ADDRESS may point at the session instance; RAY_AUTH_TOKEN would win over the token file.
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update({
        "RAY_AUTH_MODE": "token",  # for the cluster and for every client command
        "RAY_AUTH_TOKEN_PATH": str(token),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's shell finds `ecg-ray` here
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # as in conftest: never re-run workers under `uv run`
        "RAY_USAGE_STATS_ENABLED": "0",
        MARKER: str(root),
    })
    (gcs, dashboard, client, node_manager, object_manager, agent_http, agent_grpc, metrics,
     runtime_env_agent) = _free_ports(9)
    # Every port is explicit (the defaults 6379, 8265, 10001, 52365 and worker ports 10002-19999 would
    # collide with other Ray instances on the machine); worker ports 0-0 mean "any free port".
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             f"--ray-client-server-port={client}",
             f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
             f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
             f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env_agent}",
             "--min-worker-port=0", "--max-worker-port=0", "--num-cpus=2", "--object-store-memory=500000000",
             f"--temp-dir={root}", "--disable-usage-stats"]
    cluster = Cluster(root, env, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}")
    try:
        proc = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"ray start failed\n{_tail(proc)}"
        yield cluster
    finally:
        killed = stop_cluster(marker.encode())
        shutil.rmtree(root, ignore_errors=True)
        assert not _marked_pids(marker.encode()), "processes of the test cluster survived SIGKILL"
        if killed:
            print(f"[test_jobs] SIGKILLed {len(killed)} cluster processes that ignored SIGTERM")


@pytest.mark.slow
def test_pretrain_runs_as_ray_job(ray_cluster, ptbxl_store, tmp_path):
    cluster = ray_cluster

    # The token works for the GCS (gRPC) ... `ray status` says "No cluster status" until the autoscaler
    # monitor has reported once, a few seconds after `ray start` returns.
    deadline = time.monotonic() + 60
    while True:
        status = _ray(cluster, "status", f"--address={cluster.gcs_address}", timeout=120)
        if status.returncode != 0 or "/2.0 CPU" in status.stdout or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert status.returncode == 0 and "/2.0 CPU" in status.stdout, _tail(status)
    # ... and a wrong token is refused, so authentication is really on.
    wrong = cluster.root / "wrong-token"
    wrong.write_text(secrets.token_hex(32))
    refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", cluster.dashboard_url],
                             env={**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong)},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "Invalid authentication token" in refused.stdout + refused.stderr, \
        _tail(refused)

    # A job imports ecg_ray from the uploaded working_dir (Ray puts it first on PYTHONPATH), not from the
    # editable install, so a job runs the code that was submitted.
    where = _ray(cluster, "job", "submit", "--address", cluster.dashboard_url, "--working-dir", ".",
                 "--runtime-env-json", json.dumps(RUNTIME_ENV), "--",
                 "python", "-c", "import ecg_ray; print('ECG_RAY_FROM', ecg_ray.__file__)",
                 cwd=REPO, timeout=300)
    origin = [line for line in where.stdout.splitlines() if line.startswith("ECG_RAY_FROM ")]
    assert where.returncode == 0 and origin and "/working_dir_files/_ray_pkg_" in origin[-1], _tail(where)

    # `ray job submit` blocks, streams the job's output and exits 1 if the job FAILED.
    job_id = f"ecg-ray-smoke-{secrets.token_hex(4)}"
    runs = tmp_path / "runs"
    submit = _ray(cluster, "job", "submit", "--address", cluster.dashboard_url, "--submission-id", job_id,
                  "--working-dir", ".", "--runtime-env-json", json.dumps(RUNTIME_ENV),
                  "--entrypoint-num-cpus", "0", "--",
                  "ecg-ray", "pretrain", "--config", "jobs/smoke/simclr.yaml", "--store", str(ptbxl_store),
                  "--epochs", "1", "--workers", "1", "--set", "train.probe=false",
                  "--set", "train.batch_size=32", "--output", str(runs), "--json",
                  cwd=REPO, timeout=600)
    assert submit.returncode == 0, f"ray job submit failed\n{_tail(submit)}"

    # `ray job status` reports the SUCCEEDED state as "Job '<id>' succeeded".
    status = _ray(cluster, "job", "status", "--address", cluster.dashboard_url, "--log-color", "false",
                  job_id, timeout=120)
    assert status.returncode == 0 and f"Job '{job_id}' succeeded" in status.stdout, _tail(status)

    logs = _ray(cluster, "job", "logs", "--address", cluster.dashboard_url, job_id, timeout=120)
    assert logs.returncode == 0, _tail(logs)
    lines = [line for line in logs.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary in the job logs\n{_tail(logs)}"
    # The job's driver trained on this cluster (RAY_ADDRESS set by Ray), not on a private local instance.
    assert "Connecting to existing Ray cluster" in logs.stdout, _tail(logs)
    summary = json.loads(lines[-1])
    assert summary["method"] == "simclr" and summary["epochs"] == 1, summary
    run_dir, checkpoint = Path(summary["run_dir"]), Path(summary["checkpoint"])
    assert run_dir.parent == runs and run_dir in checkpoint.parents, summary
    assert (checkpoint / "state.pt").is_file(), sorted(p.name for p in checkpoint.iterdir())

    # The uploaded working_dir holds the code and configs, but not .venv (.gitignore) nor .git (excludes).
    unpacked = cluster.root / "session_latest" / "runtime_resources" / "working_dir_files"
    packages = [p for p in unpacked.glob("_ray_pkg_*") if p.is_dir()]  # beside them lie *.zip.lock files
    assert len(packages) == 1, packages
    package = packages[0]
    assert (package / "ecg_ray" / "cli" / "__init__.py").is_file()
    assert (package / "jobs" / "smoke" / "simclr.yaml").is_file()
    assert not (package / ".venv").exists() and not (package / ".git").exists()
