"""The benchmark scripts that feed bench/RESULTS.md and the README's cost estimate still run.

Tiny settings only: these check that the scripts work end to end (so a session lent a GPU can run
them as they are) and that their RESULT lines are well formed, not the figures themselves.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_step_throughput_measures_and_costs_a_paper_run(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(BENCH / "step_throughput.py"), "--methods", "simclr,cpc",
                           "--precisions", "fp32,bf16,fp16", "--batch", "8", "--steps", "1", "--warmup", "0",
                           "--threads", "1", "--usd-per-hour", "2.0", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(re.findall(r"^RESULT (\S+) \w+=([0-9.]+)$", proc.stdout, re.M))
    for name in ("step_simclr_fp32", "step_simclr_bf16", "step_speedup_simclr_bf16", "paper_pretraining_cpc_fp32"):
        assert float(results[name]) > 0, name
    # fp16 needs a GPU: reported as not measured on a CPU, not silently skipped or faked
    assert "simclr  fp16  batch     8: not measured (ConfigError: train.precision=fp16 needs a GPU" in proc.stdout
    rows = json.loads(out.read_text())
    simclr = next(r for r in rows if r["method"] == "simclr" and r["precision"] == "fp32")
    # device-hours follow from the measured rate: 2000 epochs x 49,109 records / samples per second
    assert abs(simclr["paper_device_hours"] - 2000 * 49_109 / simclr["samples_per_s"] / 3600) < 1e-6
    assert simclr["paper_usd"] == simclr["paper_device_hours"] * 2.0 and simclr["speedup_vs_fp32"] == 1.0


def test_gpu_check_needs_neither_ray_nor_the_data_stack():
    """bench/gpu_check.py runs on a bare GPU machine: importing it and its step code pulls no Ray, zarr or pyarrow."""
    code = (
        "import sys\n"
        "for name in ('ray', 'zarr', 'pyarrow'):\n"
        "    sys.modules[name] = None  # any import of them fails\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        "import gpu_check\n"
        "import torch\n"
        "config = gpu_check.job_config('simclr', 'fp32', batch=4)\n"
        "method, optimizer, scheduler, autocast, scaler = gpu_check.build(config, torch.device('cpu'), 2)\n"
        "from ecg_ray.train.step import training_step\n"
        "from ecg_ray.methods.base import synthetic_batch\n"
        "x = synthetic_batch(gpu_check.crops(config, torch.device('cpu'), 1)[0])\n"
        "print('loss', float(training_step(method, method, x, optimizer, scheduler, autocast, scaler, 1)))\n"
        "print('cuda', torch.cuda.is_available())\n"
        "print('exit', gpu_check.main() if not torch.cuda.is_available() else 'gpu')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^loss \d", proc.stdout, re.M)
    if "cuda False" in proc.stdout:
        assert "exit 2" in proc.stdout and "no CUDA device" in proc.stdout  # says why it did nothing


@pytest.mark.slow
def test_epoch_overhead_mode_splits_a_real_epoch(ptbxl_dir):
    """``--epoch`` runs a real pretraining and prints the training share of the epoch's wall time."""
    proc = subprocess.run([sys.executable, str(BENCH / "step_throughput.py"), "--epoch", "--methods", "simclr",
                           "--epoch-steps", "1", "--batch", "8"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(re.findall(r"^RESULT (\S+) ratio=([0-9.]+)$", proc.stdout, re.M))
    every, intervals = float(results["epoch_overhead_every_epoch_simclr"]), float(results["epoch_overhead"])
    assert 0 < every <= intervals <= 1  # validating every epoch can only cost more than every 25th


def _scale_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_scale", BENCH / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_tiles_windows_of_the_base_records_and_sizes_the_disk(tmp_path):
    """bench/scale.py's store: record i is a window of base record i % len(base) at a shifting start, with
    its own id, file and patient; the record length is the longest that fits a third of the free disk."""
    import numpy as np

    from ecg_ray.data.store import EcgStore

    scale = _scale_module()
    rng = np.random.default_rng(0)
    base = [{"signal": rng.normal(size=(1000, 12)).astype(np.float32), "id": f"b{k}", "dataset": "ptbxl",
             "file": f"records100/b{k}", "patient_id": f"p{k}", "fold": k + 1} for k in range(3)]
    records, length = 12_000, 40  # 4,000 repeats of each base record: starts wrap around the base length
    store = EcgStore(scale.tile_store(base, tmp_path / "tiled", records, length))
    assert len(store) == records and store.records["id"].is_unique and store.records["file"].is_unique
    assert store.records["patient_id"].nunique() == records
    for i in (0, 1, 2, 3, 4, 77, 5_000, records - 1):
        rep = i // 3
        start = (rep * 37) % (1000 - length + 1)
        np.testing.assert_array_equal(store.signal(i), base[i % 3]["signal"][start:start + length])
        assert store.records["fold"].iloc[i] == i % 3 + 1
    # 1M records x 500 samples x 48 B = 24 GB fits a third of 75 GB; 1000 samples (48 GB) does not
    assert scale.choose_length(0, 1_000_000, 250, 75e9) == 500
    assert scale.choose_length(0, 1_000_000, 250, 40e9) == 250
    assert scale.choose_length(300, 1_000_000, 250, 1e9) == 300  # asked for: taken as given
    with pytest.raises(SystemExit, match="more than a third of the 30 GB free"):
        scale.choose_length(0, 1_000_000, 250, 30e9)


@pytest.mark.slow
def test_scale_streams_every_record_over_at_least_100_read_tasks(tmp_path):
    """bench/scale.py end to end at 10k and 20k records: >= 100 read tasks, one crop per record per epoch,
    store bytes = records x samples x 48 B, and its RESULT lines for the largest N."""
    proc = subprocess.run([sys.executable, str(BENCH / "scale.py"), "--records", "10000,20000", "--length", "260",
                           "--epochs", "1", "--tmp", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for n in (10_000, 20_000):
        block = proc.stdout.split(f"N={n:,} x 260 samples")[1]
        tasks, crops = re.search(r"epoch 0: (\d+) read tasks of [\d,]+ records.* ([\d,]+) crops at", block).groups()
        assert int(tasks) >= 100 and n - 256 < int(crops.replace(",", "")) <= n
        stats = dict(re.findall(r"(\w+)=([0-9.]+)", re.search(rf"^RESULT scale_{n} (.*)$", block, re.M).group(1)))
        assert abs(float(stats["store_gb"]) - n * 260 * 48 / 1e9) < 0.01 * n * 260 * 48 / 1e9
        assert float(stats["crops_per_s"]) > 0 and float(stats["task_peak_mb"]) > 0
    results = dict(re.findall(r"^RESULT scale (\w+)=([0-9.]+)$", proc.stdout, re.M))
    assert results["crops_per_s"] == stats["crops_per_s"]  # the largest N's
    assert float(results["driver_bytes_per_record"]) > 0
    assert list(tmp_path.iterdir()) == []  # its stores are removed
