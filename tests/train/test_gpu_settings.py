"""GPU settings checked before Ray starts: whole GPUs per rank, and what precision ``auto`` picks."""

from __future__ import annotations

import pytest
import torch

from ecg_ray.config import load_config
from ecg_ray.errors import ConfigError
from ecg_ray.train.step import resolve_precision
from ecg_ray.train.trainer import check_resources


@pytest.mark.parametrize("device, bf16, expected", [("cuda", True, "bf16"), ("cuda", False, "fp16"),
                                                    ("cpu", True, "fp32"), ("cpu", False, "fp32")])
def test_auto_precision(device, bf16, expected):
    assert resolve_precision("auto", device, bf16) == expected


def test_explicit_precision_is_kept():
    assert resolve_precision("fp32", "cuda", True) == "fp32"
    assert resolve_precision("bf16", "cpu", False) == "bf16"


@pytest.mark.parametrize("overrides, message", [
    (["train.gpus_per_worker=0.5", "train.workers=2"], "two ranks on one GPU"),
    (["train.gpus_per_worker=0.25", "train.workers=1", "train.max_workers=4"], "two ranks on one GPU"),
    (["train.gpus_per_worker=2"], "each worker drives one GPU"),
    (["train.gpus_per_worker=-1"], "must be >= 0"),
])
def test_gpu_settings_that_fail_on_a_cluster_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_resources(load_config(overrides=overrides))


@pytest.mark.parametrize("overrides", [["train.gpus_per_worker=0.5", "train.workers=1"],
                                       ["train.gpus_per_worker=1", "train.workers=8"],
                                       ["train.gpus_per_worker=0", "train.workers=4"]])
def test_gpu_settings_that_work(overrides):
    check_resources(load_config(overrides=overrides))


def test_refused_before_ray_starts(ptbxl_store, tmp_path, capsys):
    from ecg_ray.cli import main

    assert main(["pretrain", "--store", str(ptbxl_store), "--config", "jobs/smoke/simclr.yaml", "--workers", "2",
                 "--gpus-per-worker", "0.5", "--output", str(tmp_path)]) == 2
    assert "two ranks on one GPU" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run directory: nothing started


def test_cpc_lstm_runs_in_fp32_under_autocast():
    from ecg_ray.models import build_encoder

    encoder = build_encoder("cpc_4fc2lstm")
    x = torch.randn(2, 12, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = encoder.encode(x)
        c = encoder.context(z)
        features = encoder(x)
    assert z.dtype == torch.bfloat16  # the per-step layers do use the autocast dtype
    assert c.dtype == torch.float32 and features.dtype == torch.float32
    assert torch.allclose(c, encoder.context(z.float()), atol=1e-6)  # the same as outside autocast


def test_configure_device_leaves_cpu_settings_alone():
    from ecg_ray.train.step import configure_device

    before = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    configure_device(torch.device("cpu"))
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
