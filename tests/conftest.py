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
