"""Every shipped run config loads through the typed schema, and pretraining configs build their method."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ecg_ray.config import load_config

JOBS = Path(__file__).resolve().parents[1] / "jobs"
SWEEP_KEYS = ("search", "variants", "searcher")
RUN_CONFIGS = sorted(p for p in JOBS.rglob("*.yaml")
                     if not any(f"\n{k}:" in "\n" + p.read_text() for k in SWEEP_KEYS))


def test_there_are_run_configs_in_every_folder():
    assert {p.parent.name for p in RUN_CONFIGS} >= {"paper", "pretrain", "smoke", "eval"}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_run_config_loads(path):
    config = load_config(path)
    if "method" in (yaml.safe_load(path.read_text()) or {}):  # a pretraining config
        from ecg_ray.methods import build_method

        build_method(config, fs=100.0)  # method-level checks (e.g. CPC steps against the crop)
