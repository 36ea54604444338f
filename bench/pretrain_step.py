"""Benchmark: a pretraining step through Ray Train (``pretrain_worker``) against a plain PyTorch loop.

Run:  .venv/bin/python bench/pretrain_step.py [--methods simclr,byol,swav,cpc] [--threads 1]

For each method both sides build the same method, optimizer and scheduler from the same
``Config`` (``jobs/smoke/<method>.yaml`` with one worker, every record, no validation folds,
probe off) and time the same step: forward (augmentations included), loss, finiteness check,
backward, ``after_backward``, optimizer step, scheduler step, ``after_optimizer_step``, with the
same per-step batch and the same number of torch threads.

* ``ray``: the real ``ecg_ray.train.pretrain.pretrain_worker`` in a 1-worker ``TorchTrainer``
  (``ecg_ray.train.trainer.fit``), streaming crops with ``train_crops``; samples/s is the mean of
  the ``samples_per_s`` the worker reports for every epoch after the first (warm-up). That figure
  covers the epoch's step loop, including starting the stream, but not the checkpoint/report
  that follow it.
* ``plain``: a single-process loop in the driver on real crops cut from the same store with
  numpy and held in memory as torch tensors, same epochs/steps, first epoch discarded.

CPU fairness on a small machine: ``--threads`` (default 1) is both ``torch.set_num_threads`` of
the plain loop and ``train.torch_threads`` of the worker; ``--cpus-per-worker`` (default 1) is the
worker's Ray CPU reservation, which leaves the other core of a 2-core machine to the Ray Data read
tasks (what ``trainer.cpus_per_worker`` picks by itself there). The plain loop runs while the same
Ray instance is up, so Ray's background processes cost both sides alike. Ray starts its workers at
niceness 15, the plain loop runs at the shell's (0): on a shared machine that alone can move the ratio
by 10-20 %, so this run sets ``RAY_worker_niceness`` (``--worker-niceness``, default 0) to match.
``--breakdown`` adds, per method, an instrumented copy of the epoch loop in a 1-worker TorchTrainer
that splits the epoch into stream start, batch waits, step compute and iterator close.

Prints per method ``RESULT pretrain_ray_<m> samples_per_s=..``, ``RESULT pretrain_plain_<m>
samples_per_s=..`` and ``RESULT pretrain_overhead_<m> ratio=..`` (ray / plain; target >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PTBXL = ROOT.parent / "shared" / "data" / "ptb-xl-sample"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def registered_methods() -> tuple[str, ...]:
    """Every registered method (ecg_ray.methods registry); each needs its job file jobs/pretrain/<name>.yaml."""
    from ecg_ray.methods import methods

    return tuple(methods())


def method_config(method: str, store: Path, *, steps: int, epochs: int, threads: int, cpus: float,
                  batch: int | None, crop: int | None, extra: tuple[str, ...] | list[str] = ()):
    """The smoke job of ``method`` made into a 1-worker, no-validation, fixed-steps run."""
    from ecg_ray.config import load_config, parse_override

    overrides = {
        "data.store": str(store), "data.train_folds": None, "data.val_folds": None,
        "train.workers": 1, "train.probe": False, "train.max_steps_per_epoch": steps,
        "train.epochs": epochs, "train.torch_threads": threads, "train.cpus_per_worker": cpus,
        "train.keep_checkpoints": 1,
    }
    if batch is not None:
        overrides["train.batch_size"] = batch
    if crop is not None:
        overrides["data.crop"] = crop
    overrides.update(parse_override(item) for item in extra)
    return load_config(ROOT / "jobs" / "smoke" / f"{method}.yaml", overrides)


def memory_batches(store_path: Path, n_batches: int, batch: int, crop: int, seed: int = 0) -> list:
    """``n_batches`` (batch, 12, crop) float32 tensors of random real crops, one record each."""
    import torch

    from ecg_ray.data.store import EcgStore

    store = EcgStore(store_path)
    signals = store.signals()[:]
    offsets = store.records["offset"].to_numpy()
    lengths = store.records["length"].to_numpy()
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(offsets))[:n_batches * batch]
    if len(rows) < n_batches * batch:
        raise SystemExit(f"store has {len(offsets)} records, need {n_batches * batch}: raise --records")
    starts = offsets[rows] + np.floor(rng.random(len(rows)) * (lengths[rows] - crop + 1)).astype(np.int64)
    crops = np.stack([signals[s:s + crop].T for s in starts]).astype(np.float32)
    return [torch.from_numpy(np.ascontiguousarray(crops[i * batch:(i + 1) * batch])) for i in range(n_batches)]


def bench_plain(config, store_path: Path, threads: int) -> dict:
    """The pretrain_worker step, minus Ray: same builders, same order of calls, batches in memory."""
    import torch

    from ecg_ray.data.store import EcgStore
    from ecg_ray.methods import build_method
    from ecg_ray.methods.base import synthetic_batch
    from ecg_ray.train.pretrain import _epoch_seed
    from ecg_ray.train.step import build_optimization, precision_context, training_step

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        steps, batch = config.train.max_steps_per_epoch, config.train.batch_size
        batches = memory_batches(store_path, steps, batch, config.data.crop, seed=config.seed)
        device = torch.device("cpu")
        fs = EcgStore(store_path).fs
        total_steps = steps * config.train.epochs
        torch.manual_seed(config.seed)
        method = build_method(config, fs=fs).to(device)
        optimizer, scheduler = build_optimization(config, method, steps)
        autocast, scaler = precision_context(config.train.precision, device)
        method.on_train_start(total_steps)
        generator = torch.Generator(device=device)
        method.set_generator(generator)
        global_step, rates, losses = 0, [], []
        for epoch in range(config.train.epochs):
            method.on_epoch_start(epoch)
            method.train()
            generator.manual_seed(_epoch_seed(config, epoch, 0))
            start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            for x in batches:
                global_step += 1
                loss_sum += training_step(method, method, synthetic_batch(x, method.batch_fields), optimizer, scheduler,
                                          autocast, scaler, global_step)
            rates.append(len(batches) * batch / (time.perf_counter() - start))
            losses.append(float(loss_sum / len(batches)))
        return {"rates": rates, "loss": losses}
    finally:
        torch.set_num_threads(previous)


def bench_ray(config, work: Path) -> dict:
    """The real pretrain_worker through ecg_ray.train.trainer.fit (1-worker TorchTrainer)."""
    from ecg_ray.train.pretrain import pretrain_worker
    from ecg_ray.train.trainer import fit, validate_pretraining

    validate_pretraining(config)
    run_dir = work / f"ray_{config.method.name}"
    start = time.perf_counter()
    summary = fit(config, run_dir, pretrain_worker)
    wall = time.perf_counter() - start
    history = summary["history"]
    if len(history) != config.train.epochs:
        raise RuntimeError(f"ray run of {config.method.name}: {len(history)} epochs in history, "
                           f"expected {config.train.epochs}")
    return {"rates": [h["samples_per_s"] for h in history], "loss": [h["loss"] for h in history], "wall_s": wall}


def _cpu_jiffies() -> tuple[int, int]:
    """(busy jiffies of the whole machine, busy jiffies of this process) from /proc (Linux)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    own = Path("/proc/self/stat").read_text()
    own_fields = own[own.rindex(")") + 2:].split()
    return sum(fields) - fields[3] - fields[4], int(own_fields[11]) + int(own_fields[12])


def _breakdown_worker(loop_config: dict) -> None:
    """The pretrain_worker epoch loop with timers around the stream and the step (diagnosis only)."""
    import ray.data
    import ray.train
    import torch

    from ecg_ray.config import Config, from_dict
    from ecg_ray.data.store import EcgStore
    from ecg_ray.data.stream import train_crops
    from ecg_ray.methods import build_method
    from ecg_ray.methods.base import synthetic_batch
    from ecg_ray.train.pretrain import _epoch_seed, training_records
    from ecg_ray.train.step import build_optimization

    config: Config = from_dict(Config, loop_config["config"])
    omp = os.environ.get("OMP_NUM_THREADS")
    if config.train.torch_threads:
        torch.set_num_threads(config.train.torch_threads)
    store = EcgStore(config.data.store)
    train_idx = training_records(config, store)
    steps, batch = config.train.max_steps_per_epoch, config.train.batch_size
    torch.manual_seed(config.seed)
    method = build_method(config, fs=store.fs)
    optimizer, scheduler = build_optimization(config, method, steps)
    total_steps = steps * config.train.epochs
    method.on_train_start(total_steps)
    generator = torch.Generator()
    method.set_generator(generator)
    rows, global_step, tick = [], 0, os.sysconf("SC_CLK_TCK")
    for epoch in range(config.train.epochs):
        method.on_epoch_start(epoch)
        method.train()
        generator.manual_seed(_epoch_seed(config, epoch, 0))
        dataset, _ = train_crops(store, train_idx, crop=config.data.crop, seed=config.seed, epoch=epoch,
                                 crops_per_record=config.data.crops_per_record,
                                 records_per_task=config.data.records_per_task)
        busy0, own0 = _cpu_jiffies()
        start = time.perf_counter()
        batches = iter(dataset.iter_torch_batches(batch_size=batch, drop_last=True))
        first = wait = compute = 0.0
        done = 0
        while True:
            t0 = time.perf_counter()
            item = next(batches, None)  # like pretrain_worker, one batch more than it uses is fetched
            t1 = time.perf_counter()
            if done == 0:
                first = t1 - t0
            else:
                wait += t1 - t0
            if item is None or done >= steps:
                break
            loss = method(synthetic_batch(item["signal"], method.batch_fields))["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError("loss is not finite")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.after_backward()
            optimizer.step()
            scheduler.step()
            global_step += 1
            method.after_optimizer_step(global_step)
            done += 1
            compute += time.perf_counter() - t1
        t2 = time.perf_counter()
        batches.close()  # what leaving the for-loop early does in pretrain_worker
        end = time.perf_counter()
        busy1, own1 = _cpu_jiffies()
        wall = end - start
        rows.append({"rate": done * batch / wall, "wall": wall, "first": first, "wait": wait,
                     "compute": compute, "close": end - t2, "worker_cores": (own1 - own0) / tick / wall,
                     "other_cores": ((busy1 - busy0) - (own1 - own0)) / tick / wall})
    Path(loop_config["result_file"]).write_text(json.dumps({
        "omp": omp, "threads": torch.get_num_threads(), "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "progress_bars": ray.data.DataContext.get_current().enable_progress_bars, "epochs": rows}))
    ray.train.report({"done": 1})


def bench_breakdown(config, work: Path) -> dict:
    """Where a streamed epoch's time goes inside a 1-worker TorchTrainer (same resources as fit)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ecg_ray.config import to_dict

    result_file = work / f"breakdown_{config.method.name}.json"
    TorchTrainer(
        _breakdown_worker,
        train_loop_config={"config": to_dict(config), "result_file": str(result_file)},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": config.train.cpus_per_worker}),
        run_config=RunConfig(storage_path=str(work), name=f"breakdown_{config.method.name}"),
    ).fit()
    return json.loads(result_file.read_text())


def bench_stream(store_path: Path, batch: int, crop: int, epochs: int = 3) -> float:
    """Crops/s the stream offers in the driver (context: how far above the step's need it is)."""
    from ecg_ray.data.stream import train_crops

    def run(epoch):
        dataset, _ = train_crops(store_path, crop=crop, seed=0, epoch=epoch)
        return sum(x["signal"].shape[0] for x in dataset.iter_torch_batches(batch_size=batch, drop_last=True))

    run(0)
    n, start = 0, time.perf_counter()
    for e in range(epochs):
        n += run(e + 1)
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(registered_methods()))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on both sides (plain: set_num_threads; ray: train.torch_threads)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray CPU reservation of the worker")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per side; the first is warm-up")
    parser.add_argument("--steps", type=int, default=12, help="steps per epoch, xresnet methods")
    parser.add_argument("--cpc-steps", type=int, default=6, help="steps per epoch, cpc")
    parser.add_argument("--batch", type=int, default=64, help="per-step batch, xresnet methods")
    parser.add_argument("--cpc-batch", type=int, default=16, help="per-step batch, cpc")
    parser.add_argument("--records", type=int, default=2000,
                        help="PTB-XL sample tiled to this many records (must exceed steps x batch)")
    parser.add_argument("--order", default="plain,ray",
                        help="sides in run order for each method; plain,ray,plain pools two plain runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for both sides (e.g. train.checkpoint_every=100)")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="RAY_worker_niceness for this run's Ray workers (Ray's default is 15; the plain "
                             "loop runs in the driver at the shell's niceness, normally 0)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time stream start / batch waits / step compute inside the worker")
    args = parser.parse_args()
    if not (PTBXL / "ptbxl_database.csv").exists():
        print(f"SKIP: PTB-XL sample not found at {PTBXL}")
        return 0
    methods = [m for m in args.methods.split(",") if m]
    order = [o for o in args.order.split(",") if o]
    if set(order) != {"plain", "ray"}:
        parser.error("--order must name both plain and ray (e.g. plain,ray or plain,ray,plain)")
    unknown = sorted(set(methods) - set(registered_methods()))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(registered_methods())}")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # Ray starts its workers at niceness 15: on a shared machine any normal-priority process then
    # takes the CPU from the training worker but not from the plain loop (the driver, niceness 0).
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)
    import ray
    from data_pipeline import build_tiled_store
    from ray.data import DataContext

    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.ptbxl import PtbxlSource

    cpus = os.cpu_count() or 2
    tmp = Path(tempfile.mkdtemp(prefix="ecg_bench_step_"))
    t_all = time.perf_counter()
    results = {}
    try:
        base = tmp / "base"
        prepare_store([PtbxlSource(PTBXL)], base, workers=min(2, cpus), progress=False)
        store = build_tiled_store(base, tmp / "tiled", args.records, "none")
        ray.init(num_cpus=cpus, object_store_memory=1_000_000_000, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        print(f"machine: {cpus} CPUs, torch threads {args.threads} on both sides, Ray worker reserves "
              f"{args.cpus_per_worker:g} CPU (train.cpus_per_worker), Ray cluster {cpus} CPUs; niceness: Ray "
              f"workers {args.worker_niceness}, plain loop {os.getpriority(os.PRIO_PROCESS, 0)}; "
              f"store: PTB-XL sample tiled to {args.records} records, codec none; "
              f"load average at start {os.getloadavg()[0]:.2f}")
        stream = bench_stream(store, args.batch, 250)
        print(f"stream (driver, batch {args.batch}, crop 250): {stream:,.0f} crops/s available")
        for method in methods:
            is_cpc = method == "cpc"
            config = method_config(method, store, steps=args.cpc_steps if is_cpc else args.steps,
                                   epochs=args.epochs, threads=args.threads, cpus=args.cpus_per_worker,
                                   batch=args.cpc_batch if is_cpc else args.batch, crop=300 if is_cpc else None,
                                   extra=args.set)
            side: dict[str, list[dict]] = {"plain": [], "ray": []}
            for name in order:  # a side named twice is run twice and its timed epochs pooled
                side[name].append(bench_plain(config, store, args.threads) if name == "plain"
                                  else bench_ray(config, tmp))
            ray_rate = statistics.mean(r for run in side["ray"] for r in run["rates"][1:])
            plain_rate = statistics.mean(r for run in side["plain"] for r in run["rates"][1:])
            ratio = ray_rate / plain_rate
            # Other load on a shared machine only ever slows an epoch down: the best timed epoch of
            # each side is the least disturbed estimate, printed beside the mean.
            best = (max(r for run in side["ray"] for r in run["rates"][1:])
                    / max(r for run in side["plain"] for r in run["rates"][1:]))
            fmt = ", ".join
            print(f"{method}: encoder {config.model.encoder}, batch {config.train.batch_size}, crop {config.data.crop}, "
                  f"{config.train.max_steps_per_epoch} steps x {args.epochs} epochs (first = warm-up), "
                  f"optim {config.optim.name}")
            for run in side["ray"]:
                print(f"  ray   per-epoch samples/s: {fmt(f'{r:.1f}' for r in run['rates'])} "
                      f"(fit wall {run['wall_s']:.1f} s)")
            for run in side["plain"]:
                print(f"  plain per-epoch samples/s: {fmt(f'{r:.1f}' for r in run['rates'])}")
            print(f"  loss ray {fmt(f'{v:.4f}' for v in side['ray'][0]['loss'])} | "
                  f"plain {fmt(f'{v:.4f}' for v in side['plain'][0]['loss'])}")
            results[method] = (ray_rate, plain_rate, ratio, best)
            print(f"  ratio of the best timed epochs: {best:.3f}")
            print(f"RESULT pretrain_ray_{method} samples_per_s={ray_rate:.1f}")
            print(f"RESULT pretrain_plain_{method} samples_per_s={plain_rate:.1f}")
            print(f"RESULT pretrain_overhead_{method} ratio={ratio:.3f}", flush=True)
            if args.breakdown:
                info = bench_breakdown(config, tmp)
                print(f"  breakdown inside the worker (OMP_NUM_THREADS={info['omp']}, torch threads "
                      f"{info['threads']}, niceness {info['nice']}, Ray Data progress bars "
                      f"{info['progress_bars']}), per epoch: samples/s | first batch s | later waits s | "
                      f"step compute s | iterator close s | worker cores | other processes' cores")
                for row in info["epochs"]:
                    print(f"    {row['rate']:.1f} | {row['first']:.3f} | {row['wait']:.3f} | {row['compute']:.2f} | "
                          f"{row['close']:.3f} | {row['worker_cores']:.2f} | {row['other_cores']:.2f}")
                timed = info["epochs"][1:]
                overhead = statistics.mean((r["wall"] - r["compute"]) / r["wall"] for r in timed)
                print(f"  stream share of a timed epoch (first batch + waits + close): {overhead:.1%}", flush=True)
        print(f"load average at end {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t_all:.0f} s")
        print("| method | ray samples/s | plain samples/s | ratio | ratio of best epochs |")
        print("|---|---|---|---|---|")
        for method, (r, p, q, b) in results.items():
            print(f"| {method} | {r:.1f} | {p:.1f} | {q:.2f} | {b:.2f} |")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
