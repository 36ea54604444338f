"""Shared fixtures: paths to the real sample data beside the project, skipped when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PTBXL_DIR = SHARED_DATA / "ptb-xl-sample"
CINC_DIR = SHARED_DATA / "cinc2021-sample"


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    if not (PTBXL_DIR / "ptbxl_database.csv").exists():
        pytest.skip(f"PTB-XL sample not found at {PTBXL_DIR} (it lives in ../shared/data beside the repo)")
    return PTBXL_DIR


@pytest.fixture(scope="session")
def cinc_dir() -> Path:
    if not CINC_DIR.is_dir():
        pytest.skip(f"CinC sample not found at {CINC_DIR} (it lives in ../shared/data beside the repo)")
    return CINC_DIR


@pytest.fixture(scope="session")
def ptbxl_store(ptbxl_dir, tmp_path_factory) -> Path:
    """The PTB-XL sample prepared once at 100 Hz (500 records) for all tests that read a store."""
    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.ptbxl import PtbxlSource

    out = tmp_path_factory.mktemp("stores") / "ptbxl100"
    prepare_store([PtbxlSource(ptbxl_dir)], out, workers=2, progress=False)
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_env() -> dict[str, str]:
    """Environment pointing every S3 client (pyarrow, obstore, boto3) at a test server on loopback.

    Set before Ray starts so that its worker processes inherit it; the server itself starts only
    when a test asks for ``s3_bucket``. Test credentials replace any real ones, so no test can
    reach a real account.
    """
    import os

    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def s3_server(s3_env):
    """A moto S3 server on 127.0.0.1 (in this process) at the port s3_env names."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency (pip install -e .[dev])")
    port = int(s3_env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield s3_env["AWS_ENDPOINT_URL"]
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request) -> str:
    """A fresh, empty bucket per test: returns its s3:// URI."""
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_session(s3_env):
    """One local Ray instance for the whole test session, sized for a 2-core machine."""
    import os

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray
    from ray.data import DataContext

    # address="local": always a new instance, never a cluster another test (ray start) left behind
    ray.init(address="local", num_cpus=2, object_store_memory=1_000_000_000, include_dashboard=False,
             log_to_driver=False, _node_ip_address="127.0.0.1", configure_logging=False)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    yield ray
    ray.shutdown()
