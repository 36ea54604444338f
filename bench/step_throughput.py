"""Benchmark: pretraining step throughput per method and precision, and what a paper run costs from it.

Run:  .venv/bin/python bench/step_throughput.py [--device auto] [--methods simclr,byol,swav,cpc]
          [--precisions fp32,bf16,fp16] [--batch N] [--steps 20] [--usd-per-hour 1.0]

For each method the paper job (``jobs/pretrain/<method>.yaml``: encoder, heads, augmentations,
optimizer, crop length) is built on one device and timed over ``--steps`` optimizer steps after
``--warmup`` untimed ones, with exactly the step the Ray Train worker runs
(``ecg_ray.train.step.training_step``: forward with augmentations, loss, backward, hooks,
optimizer and scheduler step; a GradScaler for fp16). Inputs are random crops already on the
device: this measures the model step alone (the Ray Data stream is measured by
``bench/data_pipeline.py`` and is far faster than any step, see bench/RESULTS.md). ``--methods`` also
takes the name of any other job in jobs/pretrain, e.g. ``cpc-s4`` (CPC on the cpc_s4 backbone); its
rows are named after the job.

Baseline measured in the same run: fp32 on the same device; every other precision prints its
speed-up against it. The per-device batch defaults to the paper's per-worker batch on a GPU
(job batch_size / workers, e.g. 4096 / 4 = 1024 for SimCLR) and to 64 (cpc: 16) on a CPU.

Cost of the paper's pretraining from the measured rate: device-hours = epochs x records per
epoch / samples per second per device (the job's epochs; records per epoch default 49,109 =
the ~54,566-record "All" corpus without its validation fold). With data-parallel workers the
wall-clock time divides by the number of workers if scaling is linear (an upper bound on speed).

Prints ``RESULT step_<method>_<precision> samples_per_s=..``, ``RESULT step_speedup_<method>_<precision>
ratio=..`` (against fp32) and ``RESULT paper_pretraining_<method>_<precision> device_hours=..``.

``--epoch`` instead times whole worker epochs of a real ``ecg-ray pretrain`` (Ray Train, the Ray Data
stream, the steps, the online probe or held-out loss, the checkpoint) on the PTB-XL sample, with
the paper job of each method at a CPU-sized batch and the paper's steps per epoch
(``--epoch-steps``, 12 = 49,109 records / 4,096). Validation and checkpoints run every epoch, so
each is measured; the epoch's split (``train_s``, ``probe_s``, ``checkpoint_s``, ``epoch_s`` in the
run's metrics) then gives the share of wall time spent training with the job's own intervals
(``train.probe_every``, ``train.checkpoint_every``). Prints ``RESULT epoch_overhead_<method>
ratio=..`` (training time / epoch wall time with the job's intervals; >= 0.9 is the target),
``RESULT epoch_overhead_every_epoch_<method> ratio=..`` (validating and checkpointing every epoch)
and last ``RESULT epoch_overhead ratio=..``, the lowest over the methods.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def registered_methods() -> tuple[str, ...]:
    """Every registered method (ecg_ray.methods registry); each needs its job file jobs/pretrain/<name>.yaml."""
    from ecg_ray.methods import methods

    return tuple(methods())
ALL_RECORDS_TRAIN = 49_109  # ~54,566 records of the "All" corpus x 9/10 folds


def job_config(method: str, batch: int, precision: str):
    from ecg_ray.config import load_config

    return load_config(ROOT / "jobs" / "pretrain" / f"{method}.yaml", {
        "train.batch_size": batch, "train.workers": 1, "train.precision": precision,
        "data.store": "unused-by-this-benchmark"})


def default_batch(job, method: str, device) -> int:
    """The paper's per-worker batch on a GPU; a CPU-sized one otherwise."""
    if device.type != "cuda":
        return 16 if job.method.name == "cpc" else 64  # the job's method: cpc-s4 runs cpc too
    return max(1, job.train.batch_size // max(1, job.train.workers))


def time_steps(config, device, steps: int, warmup: int, fs: float = 100.0) -> dict:
    """samples/s of ``steps`` training steps after ``warmup`` untimed ones, and the losses seen."""
    import torch

    from ecg_ray.methods import build_method
    from ecg_ray.methods.base import synthetic_batch
    from ecg_ray.train.step import build_optimization, precision_context, training_step

    torch.manual_seed(config.seed)
    if device.type == "cuda":  # each configuration's own peak, not the largest so far
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    batch, crop = config.train.batch_size, config.data.crop
    method = build_method(config, fs=fs).to(device)
    optimizer, scheduler = build_optimization(config, method, steps + warmup)
    autocast, scaler = precision_context(config.train.precision, device)
    method.on_train_start(steps + warmup)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    method.set_generator(generator)
    method.on_epoch_start(0)
    method.train()
    inputs = [synthetic_batch(0.3 * torch.randn(batch, 12, crop, device=device), method.batch_fields) for _ in range(2)]
    losses = []

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for step in range(warmup + steps):
        if step == warmup:
            sync()
            start = time.perf_counter()
        loss = training_step(method, method, inputs[step % 2], optimizer, scheduler, autocast, scaler, step + 1)
        losses.append(loss)
    sync()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"samples_per_s": steps * batch / elapsed, "step_s": elapsed / steps,
            "loss_first": float(losses[0]), "loss_last": float(losses[-1]), "peak_gib": peak}


def epoch_split(method: str, store: Path, out: Path, batch: int, steps: int, epochs: int = 3) -> dict:
    """Per-epoch wall-time split of a real pretraining run of ``method``'s paper job (last epoch)."""
    import json as json_module
    import subprocess

    from ecg_ray.config import load_config
    from ecg_ray.train.checkpoint import load_history

    job = load_config(ROOT / "jobs" / "pretrain" / f"{method}.yaml", {})
    command = [str(Path(sys.executable).parent / "ecg-ray"), "pretrain", "--config", str(ROOT / "jobs" / "pretrain" / f"{method}.yaml"),
               "--store", str(store), "--output", str(out), "--json",
               "--set", f"train.batch_size={batch}", "--set", "train.workers=1", "--set", "train.gpus_per_worker=0",
               "--set", f"train.epochs={epochs}", "--set", f"train.max_steps_per_epoch={steps}",
               "--set", "train.probe_every=1", "--set", "train.checkpoint_every=1",
               "--set", "data.train_folds=[1,2,3,4,5,6,7,8]", "--set", "data.val_folds=[9,10]",
               "--set", "optim.warmup_epochs=0"]
    if method == "cpc":
        command += ["--set", "data.crop=1000"]  # the sample's 10 s records: one window each
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "pretrain failed")
    summary = json_module.loads(done.stdout.strip().splitlines()[-1])
    last = load_history(summary["checkpoint"])[-1]  # its checkpoint_s is the previous epoch's checkpoint
    probe_every, checkpoint_every = job.train.probe_every, job.train.checkpoint_every
    other = max(0.0, last["epoch_s"] - last["train_s"] - last["probe_s"])  # stream planning, metrics
    every_epoch = last["epoch_s"] + last["checkpoint_s"]
    with_intervals = last["train_s"] + other + last["probe_s"] / probe_every + last["checkpoint_s"] / checkpoint_every
    return {"method": method, **{k: last[k] for k in ("train_s", "probe_s", "checkpoint_s", "epoch_s")},
            "other_s": other, "probe_every": probe_every, "checkpoint_every": checkpoint_every,
            "ratio_every_epoch": last["train_s"] / every_epoch, "ratio": last["train_s"] / with_intervals}


def main_epoch(args) -> None:
    import shutil
    import tempfile

    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.ptbxl import PtbxlSource

    sample = ROOT.parent / "shared" / "data" / "ptb-xl-sample"
    if not (sample / "ptbxl_database.csv").exists():
        print(f"--epoch needs the PTB-XL sample at {sample}; not found")
        return
    tmp = Path(tempfile.mkdtemp(prefix="ecg_ray-epoch-"))
    try:
        store = tmp / "ptbxl"
        prepare_store([PtbxlSource(sample)], store, workers=2, progress=False)
        ratios = []
        for method in args.methods.split(","):
            figures = epoch_split(method, store, tmp / "runs", args.batch or 32, args.epoch_steps)
            ratios.append(figures["ratio"])
            print(f"{method:<7} epoch of {args.epoch_steps} steps: train {figures['train_s']:.1f} s, validation "
                  f"{figures['probe_s']:.1f} s, checkpoint {figures['checkpoint_s']:.1f} s, other {figures['other_s']:.1f} s;"
                  f" job intervals: validation every {figures['probe_every']}, checkpoint every "
                  f"{figures['checkpoint_every']} epochs")
            print(f"RESULT epoch_overhead_every_epoch_{method} ratio={figures['ratio_every_epoch']:.3f}")
            print(f"RESULT epoch_overhead_{method} ratio={figures['ratio']:.3f}")
        print(f"RESULT epoch_overhead ratio={min(ratios):.3f}")  # the worst method
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--methods", default=",".join(registered_methods()),
                        help="methods, or names of jobs in jobs/pretrain (e.g. cpc-s4), comma-separated")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated; default fp32,bf16,fp16 on cuda and fp32 on cpu (fp32 is "
                             "always measured: it is the baseline)")
    parser.add_argument("--batch", type=int, default=None, help="per-device batch for every method")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method and precision")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN autotuning, caches)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--records-per-epoch", type=int, default=ALL_RECORDS_TRAIN)
    parser.add_argument("--usd-per-hour", type=float, default=None, help="price of one device-hour, for cost")
    parser.add_argument("--json", type=Path, default=None, help="also write all figures to this file")
    parser.add_argument("--epoch", action="store_true", help="time whole worker epochs instead (see above)")
    parser.add_argument("--epoch-steps", type=int, default=12, help="--epoch: optimizer steps per epoch")
    args = parser.parse_args()
    if args.epoch:
        main_epoch(args)
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    precisions = (args.precisions.split(",") if args.precisions
                  else (["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32"]))
    precisions = ["fp32"] + [p for p in precisions if p != "fp32"]
    print(f"device {device} ({name}), torch {torch.__version__}, {args.steps} timed steps after {args.warmup}")

    from ecg_ray.config import load_config

    rows = []
    for method in args.methods.split(","):
        job = load_config(ROOT / "jobs" / "pretrain" / f"{method}.yaml", {})
        batch = args.batch or default_batch(job, method, device)
        baseline = None
        for precision in precisions:
            config = job_config(method, batch, precision)
            try:
                figures = time_steps(config, device, args.steps, args.warmup)
            except Exception as exc:  # e.g. fp16 on CPU, or out of memory at this batch
                print(f"{method:<7} {precision:<5} batch {batch:>5}: not measured ({type(exc).__name__}: {exc})")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            rate = figures["samples_per_s"]
            hours = job.train.epochs * args.records_per_epoch / rate / 3600
            row = {"method": method, "precision": precision, "batch": batch, "crop": config.data.crop,
                   "device": str(device), "device_name": name, **figures,
                   "paper_epochs": job.train.epochs, "records_per_epoch": args.records_per_epoch,
                   "paper_device_hours": hours,
                   "paper_usd": hours * args.usd_per_hour if args.usd_per_hour else None}
            if precision == "fp32":
                baseline = rate
            row["speedup_vs_fp32"] = rate / baseline if baseline else None
            rows.append(row)
            memory = f", peak {figures['peak_gib']:.1f} GiB" if figures["peak_gib"] is not None else ""
            print(f"{method:<7} {precision:<5} batch {batch:>5} x {config.data.crop}: {rate:9.1f} samples/s "
                  f"({figures['step_s'] * 1000:.0f} ms/step{memory}); loss {figures['loss_first']:.3f} -> "
                  f"{figures['loss_last']:.3f}; paper run ({job.train.epochs} epochs x {args.records_per_epoch}) "
                  f"= {hours:,.1f} device-hours" + (f" = ${row['paper_usd']:,.0f}" if row["paper_usd"] else ""))
            print(f"RESULT step_{method}_{precision} samples_per_s={rate:.1f}")
            if precision != "fp32" and baseline:
                print(f"RESULT step_speedup_{method}_{precision} ratio={rate / baseline:.3f}")
            print(f"RESULT paper_pretraining_{method}_{precision} device_hours={hours:.1f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
