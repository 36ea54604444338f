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


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session, sized for a 2-core machine."""
    import os

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray
    from ray.data import DataContext

    ray.init(num_cpus=2, object_store_memory=1_000_000_000, include_dashboard=False,
             log_to_driver=False, _node_ip_address="127.0.0.1", configure_logging=False)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    yield ray
    ray.shutdown()
