"""On a GPU: one training step per method makes no host-device synchronisation (skipped without CUDA).

``torch.cuda.set_sync_debug_mode("error")`` raises on any operation that waits for the device (a
``.item()``, a tensor built from host data, a blocking copy), which a CPU run cannot see. The same
check runs in ``bench/gpu_check.py`` on a lent GPU; fp16 is left out because its GradScaler reads
the inf check back by design.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs CUDA: run on a GPU machine (bench/gpu_check.py runs the same check)")

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", ["simclr", "byol", "swav", "cpc"])
def test_training_step_does_not_sync(method, precision):
    gpu_check = _gpu_check()
    config = gpu_check.job_config(method, precision, batch=16 if method == "cpc" else 64)
    assert gpu_check.sync_free_step(config, torch.device("cuda")) is None


def test_cpc_lstm_runs_in_float32_under_bf16():
    assert _gpu_check().cpc_lstm_dtype(torch.device("cuda")) == "float32"
