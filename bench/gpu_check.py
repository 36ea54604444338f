"""One prepared check for a lent GPU: throughput, memory, host syncs, precision and portability per method.

Run (at most ~10 minutes on one GPU; needs torch with CUDA, not Ray, zarr or the data stack):
    python bench/gpu_check.py [--steps 10] [--warmup 3] [--methods simclr,byol,swav,cpc] [--out DIR]

Imports only ecg_ray's config, model, method, loss and step code (``ecg_ray.train.step``), so it runs
on a bare GPU machine with torch installed. For every method of ``jobs/pretrain/`` (its encoder,
heads, augmentations, optimizer and crop; the paper's per-worker batch, 1024 for SimCLR) it measures:

- step throughput and peak memory per precision (fp32, bf16, fp16 with a GradScaler): the exact
  step the Ray Train worker runs (``training_step``), peak memory reset before each configuration;
  the baseline for the speed-up ratios is fp32 measured in the same run;
- a step under ``torch.cuda.set_sync_debug_mode("error")`` (fp32 and bf16: the fp16 GradScaler
  reads its inf check back by design), which fails on any host-device synchronisation in the step;
- the dtype CPC's LSTM runs in under bf16 autocast (it must be float32, see ecg_ray.models.cpc_net);
- bf16 against fp32: the first loss from the same weights and inputs, relative difference;
- a checkpoint saved on the GPU and loaded on the CPU: the encoder gives the same features.

Prints ``RESULT gpu_step_<method>_<precision> samples_per_s=.. peak_gib=..``,
``RESULT gpu_speedup_<method>_<precision> ratio=..``, ``RESULT gpu_sync_free_<method>_<precision> ok=0|1``,
``RESULT gpu_cpc_lstm_dtype dtype=..``, ``RESULT gpu_bf16_loss_<method> rel_diff=..``,
``RESULT gpu_checkpoint_cpu_load_<method> rel_diff=..``; with ``--out DIR`` also DIR/gpu_check.json.
Exit status 1 if a correctness check failed (a sync in the step, CPC's LSTM not in float32, a bf16
loss more than 5 % off, a checkpoint that does not load on the CPU).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def registered_methods() -> tuple[str, ...]:
    """Every registered method (ecg_ray.methods registry); each needs its job file jobs/pretrain/<name>.yaml."""
    from ecg_ray.methods import methods

    return tuple(methods())
PRECISIONS = ("fp32", "bf16", "fp16")
BF16_LOSS_TOLERANCE = 0.05


def job_config(method: str, precision: str, batch: int | None = None):
    """The paper job of ``method`` on one worker with the paper's per-worker batch (or ``batch``)."""
    from ecg_ray.config import load_config

    job = load_config(ROOT / "jobs" / "pretrain" / f"{method}.yaml", {})
    per_worker = batch or max(1, job.train.batch_size // max(1, job.train.workers))
    return load_config(ROOT / "jobs" / "pretrain" / f"{method}.yaml", {
        "train.batch_size": per_worker, "train.workers": 1, "train.precision": precision,
        "data.store": "unused-by-this-check"})


def build(config, device: torch.device, total_steps: int):
    """(method, optimizer, scheduler, autocast, scaler) exactly as a worker builds them."""
    from ecg_ray.methods import build_method
    from ecg_ray.train.step import build_optimization, precision_context

    torch.manual_seed(config.seed)
    method = build_method(config, fs=100.0).to(device)
    optimizer, scheduler = build_optimization(config, method, total_steps)
    autocast, scaler = precision_context(config.train.precision, device)
    method.on_train_start(total_steps)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    method.set_generator(generator)
    method.on_epoch_start(0)
    method.train()
    return method, optimizer, scheduler, autocast, scaler


def crops(config, device: torch.device, n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    return [(0.3 * torch.randn(config.train.batch_size, 12, config.data.crop, generator=g)).to(device)
            for _ in range(n)]


def time_steps(config, device: torch.device, steps: int, warmup: int) -> dict:
    """samples/s and peak memory of ``steps`` steps after ``warmup`` untimed ones."""
    from ecg_ray.methods.base import synthetic_batch
    from ecg_ray.train.step import training_step

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    method, optimizer, scheduler, autocast, scaler = build(config, device, steps + warmup)
    inputs = [synthetic_batch(x, method.batch_fields) for x in crops(config, device)]
    losses = []
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize(device)
            start = time.perf_counter()
        losses.append(training_step(method, method, inputs[step % 2], optimizer, scheduler, autocast, scaler,
                                    step + 1))
    torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {"samples_per_s": steps * config.train.batch_size / elapsed, "step_ms": 1000 * elapsed / steps,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "loss_first": float(losses[0]), "loss_last": float(losses[-1])}


def sync_free_step(config, device: torch.device) -> str | None:
    """None if a (warm) training step makes no host-device synchronisation; else the error."""
    from ecg_ray.methods.base import synthetic_batch
    from ecg_ray.train.step import training_step

    method, optimizer, scheduler, autocast, scaler = build(config, device, 4)
    inputs = [synthetic_batch(x, method.batch_fields) for x in crops(config, device)]
    training_step(method, method, inputs[0], optimizer, scheduler, autocast, scaler, 1)  # lazy init, caches
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        training_step(method, method, inputs[1], optimizer, scheduler, autocast, scaler, 2)
        return None
    except RuntimeError as exc:
        return "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize(device)


def cpc_lstm_dtype(device: torch.device) -> str:
    """The dtype CPC's LSTM computes in under bf16 autocast (its output's dtype)."""
    config = job_config("cpc", "bf16", batch=8)
    method, _, _, autocast, _ = build(config, device, 1)
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out[0].dtype))
             for m in method.modules() if isinstance(m, torch.nn.LSTM)]
    with autocast():
        method(crops(config, device, 1)[0])
    for hook in hooks:
        hook.remove()
    return ",".join(sorted({str(d).replace("torch.", "") for d in seen})) or "no LSTM"


def bf16_loss_difference(method_name: str, device: torch.device) -> float:
    """|loss_bf16 - loss_fp32| / |loss_fp32| of one forward from the same weights and input."""
    losses = {}
    for precision in ("fp32", "bf16"):
        config = job_config(method_name, precision, batch=64 if method_name != "cpc" else 16)
        method, _, _, autocast, _ = build(config, device, 1)
        method.eval()  # batch statistics aside, the same function in both precisions
        generator = torch.Generator(device=device)
        generator.manual_seed(1)
        method.set_generator(generator)
        with torch.no_grad(), autocast():
            losses[precision] = float(method(crops(config, device, 1)[0])["loss"])
    return abs(losses["bf16"] - losses["fp32"]) / max(abs(losses["fp32"]), 1e-12)


def checkpoint_on_cpu(method_name: str, device: torch.device) -> float:
    """Save the method's state on the GPU, load it into a CPU-built method: max |features difference| / max |features|."""
    from ecg_ray.methods import build_method

    config = job_config(method_name, "fp32", batch=8)
    gpu_method, *_ = build(config, device, 1)
    buffer = io.BytesIO()
    torch.save(gpu_method.state_dict(), buffer)
    buffer.seek(0)
    cpu_method = build_method(config, fs=100.0)
    cpu_method.load_state_dict(torch.load(buffer, map_location="cpu", weights_only=True))
    x = crops(config, torch.device("cpu"), 1)[0]
    gpu_method.eval()
    cpu_method.eval()
    with torch.no_grad():
        on_gpu = gpu_method.encoder(x.to(device)).float().cpu()
        on_cpu = cpu_method.encoder(x).float()
    return float((on_gpu - on_cpu).abs().max() / on_cpu.abs().max().clamp(min=1e-12))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(registered_methods()))
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None, help="per-GPU batch (default: the paper's per worker)")
    parser.add_argument("--out", type=Path, default=None, help="write gpu_check.json here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device; nothing to check (this script is for a lent GPU)")
        return 2
    from ecg_ray.train.step import configure_device

    device = torch.device("cuda")
    configure_device(device)  # what the Ray Train workers set (cudnn.benchmark, TF32 matmuls)
    print(f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"bf16 supported: {torch.cuda.is_bf16_supported()}")
    report: dict = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "steps": [], "sync": {}, "bf16_loss": {}, "checkpoint": {}}
    failed = []
    methods = args.methods.split(",")
    precisions = ["fp32"] + [p for p in args.precisions.split(",") if p != "fp32"]
    for name in methods:
        baseline = None
        for precision in precisions:
            config = job_config(name, precision, args.batch)
            try:
                figures = time_steps(config, device, args.steps, args.warmup)
            except Exception as exc:  # out of memory at this batch: say so, go on
                print(f"{name:<7} {precision:<5}: not measured ({type(exc).__name__}: {str(exc)[:200]})")
                torch.cuda.empty_cache()
                continue
            baseline = baseline or (figures["samples_per_s"] if precision == "fp32" else None)
            report["steps"].append({"method": name, "precision": precision, "batch": config.train.batch_size,
                                    **figures})
            print(f"{name:<7} {precision:<5} batch {config.train.batch_size:>5}: {figures['samples_per_s']:9.1f} "
                  f"samples/s, {figures['step_ms']:.1f} ms/step, peak {figures['peak_gib']:.2f} GiB, "
                  f"loss {figures['loss_first']:.3f} -> {figures['loss_last']:.3f}")
            print(f"RESULT gpu_step_{name}_{precision} samples_per_s={figures['samples_per_s']:.1f} "
                  f"peak_gib={figures['peak_gib']:.2f}")
            if precision != "fp32" and baseline:
                print(f"RESULT gpu_speedup_{name}_{precision} ratio={figures['samples_per_s'] / baseline:.3f}")
        for precision in ("fp32", "bf16"):
            error = sync_free_step(job_config(name, precision, 64 if name != "cpc" else 16), device)
            report["sync"][f"{name}_{precision}"] = error
            print(f"RESULT gpu_sync_free_{name}_{precision} ok={int(error is None)}")
            if error:
                failed.append(f"{name} {precision}: host sync in the step: {error}")
        diff = bf16_loss_difference(name, device)
        report["bf16_loss"][name] = diff
        print(f"RESULT gpu_bf16_loss_{name} rel_diff={diff:.4f}")
        if not diff <= BF16_LOSS_TOLERANCE:
            failed.append(f"{name}: bf16 loss {diff:.1%} off fp32")
        err = checkpoint_on_cpu(name, device)
        report["checkpoint"][name] = err
        print(f"RESULT gpu_checkpoint_cpu_load_{name} rel_diff={err:.2e}")
        if not err < 1e-2:
            failed.append(f"{name}: features after CPU load differ by {err:.1%} (TF32 on the GPU allows ~0.1 %)")
    if "cpc" in methods:
        dtype = cpc_lstm_dtype(device)
        report["cpc_lstm_dtype"] = dtype
        print(f"RESULT gpu_cpc_lstm_dtype dtype={dtype}")
        if dtype != "float32":
            failed.append(f"cpc: LSTM ran in {dtype} under bf16 autocast")
    report["failed"] = failed
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    for line in failed:
        print(f"FAILED {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
