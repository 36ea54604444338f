"""Benchmark: a store of N records end to end (issue #12, "planned for 10M records").

Run:  .venv/bin/python bench/scale.py [--records 100000,1000000] [--length 0 (auto)] [--crop 250]

For each N, ascending, on this machine:

1. **Build** an N-record store through ``StoreWriter`` by tiling real records: N windows of
   ``--length`` samples cut from the PTB-XL sample at 100 Hz (500 records of 1000 samples, prepared
   with ``prepare_store``), each record with its own id, file and patient (as a real corpus has),
   so the driver's tables are as large as a real corpus's. Without ``../shared/data`` the base is
   500 synthetic records instead, and the output says so. Reports store bytes, write seconds (the
   writer and its checksums, not WFDB decoding: ``bench/prepare.py`` measures that) and the
   writer's memory growth per record.
2. **Stream** the whole store as one worker (``train_crops``, global shuffle, ``records_per_task``
   chosen so that there are at least ``--min-tasks`` read tasks): plan seconds, time to first
   batch, crops/s per epoch (the first epoch reads what the page cache kept of the write).
3. **Memory** (each phase in a fresh process, so no allocator state carries over). Driver: peak
   growth of its private resident memory (``RssAnon``, sampled every 5 ms; the object store's
   shared pages and mapped files are not private) from before the store is opened to the end of
   the epochs, per record; the ``tracemalloc`` peak of opening + planning alone; and the growth of
   opening the store alone (the records table's columns it reads at open: offset and length). Read task: peak private memory of the Ray worker process
   running one full-size read task (its second run, after imports and caches), and its pickled size.

The first epoch also verifies every chunk's sha256 in each worker process (``ecg_ray.data.integrity``);
the disk reads per epoch (machine-wide) show whether the store still fits the page cache.

The largest N must fit the disk: ``--length 0`` picks the longest record (1000, 500, 400, 300 or
250 samples) whose store takes at most a third of the free space, and prints the choice.

Prints ``RESULT scale_<N> ...`` per N, then ``RESULT scale driver_bytes_per_record=..`` and
``RESULT scale crops_per_s=..`` for the largest N.

``--fields patient_index,crop_start`` (the batch fields a method can ask for, ``Method.batch_fields``)
streams each store a second time, in a fresh process, with those fields added, and prints
``RESULT scale_fields_<N> driver_bytes_per_record=.. baseline_driver_bytes_per_record=..
crops_per_s=.. baseline_crops_per_s=.. ratio=..`` (crops/s with the fields over without, same store,
same run).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_pipeline import PTBXL  # noqa: E402  (the shared sample's location, one definition)

BYTES_PER_SAMPLE = 12 * 4  # 12 leads of float32
LENGTH_CHOICES = (1000, 500, 400, 300, 250)


def proc_status(field: str) -> int:
    """One ``/proc/self/status`` memory field (``RssAnon``, ``VmHWM``, ...) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakSampler:
    """Peak of this process's private resident memory (``RssAnon``) while the ``with`` block runs.

    ``VmHWM`` would be simpler but counts the object store's shared pages the consumer maps; those
    are bounded blocks in flight, not driver state. ``growth`` is the peak above the value at entry.
    """

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, proc_status("RssAnon"))

    def __enter__(self) -> PeakSampler:
        gc.collect()
        self.start = self.peak = proc_status("RssAnon")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status("RssAnon"))

    @property
    def growth(self) -> int:
        return self.peak - self.start


def prepare_base(out: Path) -> str:
    """The store tiled into every N-record store: the PTB-XL sample at 100 Hz, else synthetic records (said so)."""
    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.ptbxl import PtbxlSource
    from ecg_ray.data.sources.synthetic import SyntheticSource

    if (PTBXL / "ptbxl_database.csv").exists():
        source, kind = PtbxlSource(PTBXL), f"PTB-XL sample at 100 Hz ({PTBXL})"
    else:
        source, kind = SyntheticSource(n_records=500), "SYNTHETIC records (PTB-XL sample not found at ../shared/data)"
    prepare_store([source], out, workers=2, progress=False)
    return kind


def base_records(base: Path) -> list[dict]:
    """The base store's records in memory: signal and the metadata every tiled copy derives from."""
    from ecg_ray.data.store import EcgStore

    store = EcgStore(base)
    signals = store.signals()[:]
    return [{"signal": signals[int(row.offset):int(row.offset) + int(row.length)], "id": str(row.id),
             "dataset": str(row.dataset), "file": str(row.file), "patient_id": str(row.patient_id),
             "fold": int(getattr(row, "fold", 0))} for row in store.records.itertuples()]


def choose_length(requested: int, records: int, crop: int, free_bytes: int) -> int:
    """Samples per record: ``requested``, or (0) the longest choice whose store fits a third of the free disk."""
    if requested:
        return requested
    for length in LENGTH_CHOICES:
        if length >= crop and records * length * BYTES_PER_SAMPLE <= free_bytes / 3:
            return length
    raise SystemExit(f"{records:,} records of >= {crop} samples need "
                     f"{records * crop * BYTES_PER_SAMPLE / 1e9:.1f} GB, more than a third of the "
                     f"{free_bytes / 1e9:.0f} GB free: pass fewer --records or a smaller --crop")


def tile_store(base: list[dict], out: Path, records: int, length: int) -> Path:
    """``records`` records of ``length`` samples: windows of the base records at shifting offsets.

    Record i is base record i % 500 from sample ((i // 500) * 37) % (base length - length + 1), so
    repeats of one base record differ; ids, files and patients are unique per repeat.
    """
    from ecg_ray.data.sources.base import Record
    from ecg_ray.data.store_writer import StoreWriter

    writer = StoreWriter(out, fs=100.0)
    for i in range(records):
        rec, rep = base[i % len(base)], i // len(base)
        signal = rec["signal"]
        start = (rep * 37) % (len(signal) - length + 1)
        writer.add(Record(id=f"{rec['id']}_t{rep}", dataset=rec["dataset"], file=f"tiled/{rep:05d}/{rec['file']}",
                          signal=signal[start:start + length], fs=100.0, fs_original=100.0, labels=[],
                          metadata={"fold": rec["fold"], "patient_id": f"{rec['patient_id']}_t{rep}"}))
    writer.finalize(sources=[{"kind": "bench-scale-tiled", "records": records, "length": length}],
                    label_names=None)
    return out


@contextmanager
def capture_datasource():
    """The datasource ``train_crops`` builds (to ship one of its read tasks on its own)."""
    from ecg_ray.data import stream

    captured = []
    original = stream._dataset

    def keep(source, tasks):
        captured.append(source)
        return original(source, tasks)

    with mock.patch.object(stream, "_dataset", keep):
        yield captured


def read_task_memory(read_task) -> dict:
    """Private memory of a Ray worker running one read task: at the start and at its peak (second run:
    the first one pays imports and the reader's caches)."""
    import ray

    @ray.remote(num_cpus=1)
    def run(task):
        def once():
            return sum(block.nbytes for block in task())

        once()
        with PeakSampler(interval_s=0.001) as sampler:
            block_bytes = once()
        return {"before": sampler.start, "peak": sampler.peak, "block_bytes": block_bytes}

    return ray.get(run.remote(read_task))


def disk_read_bytes() -> int:
    """Bytes read from this machine's disks so far (``/proc/diskstats``, whole devices, 512-byte sectors)."""
    total = 0
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if re.fullmatch(r"(sd|vd|xvd)[a-z]+|nvme\d+n\d+", fields[2]):
            total += int(fields[5]) * 512
    return total


def stream_epoch(store: Path, epoch: int, crop: int, batch: int, records_per_task: int,
                 fields: tuple[str, ...] = ()) -> dict:
    """One epoch of the whole store as one worker: plan s, first batch s, crops/s, read tasks."""
    from ecg_ray.data.stream import train_crops

    disk = disk_read_bytes()
    start = time.perf_counter()
    dataset, info = train_crops(store, crop=crop, seed=0, epoch=epoch, records_per_task=records_per_task,
                                fields=fields)
    planned = time.perf_counter()
    first, crops = None, 0
    for x in dataset.iter_torch_batches(batch_size=batch, drop_last=True):
        crops += x["signal"].shape[0]
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return {"plan_s": planned - start, "first_batch_s": first - start, "crops": crops,
            "crops_per_s": crops / (end - start), "tasks": info.read_tasks, "disk_read": disk_read_bytes() - disk}


def phase_build(args) -> dict:
    """Child process: tile ``args.records`` records into ``args.store`` (memory of a process that only writes)."""
    base = base_records(Path(args.base))
    with PeakSampler() as writer:
        start = time.perf_counter()
        tile_store(base, Path(args.store), args.records, args.length)
        seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in Path(args.store).rglob("*") if p.is_file())
    return {"write_s": seconds, "writer_growth": writer.growth, "bytes": size}


def phase_stream(args) -> dict:
    """Child process: epochs of the stream, driver memory and one read task's memory.

    A first stream over the small base store pays Ray Data's imports and start-up, so the driver's
    growth measured afterwards is what the N-record store costs it.
    """
    import logging

    import ray
    from ray import cloudpickle
    from ray.data import DataContext

    from ecg_ray.data.stream import auto_records_per_task, train_crops

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # A cluster of its own ("local"), never one another process on this machine started.
    ray.init(address="local", num_cpus=2, object_store_memory=1_000_000_000, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    DataContext.get_current().enable_progress_bars = False
    DataContext.get_current().print_on_execution_start = False
    store, n = Path(args.store), args.records
    stream_epoch(Path(args.base), 0, args.crop, args.batch, 50)  # warm-up: imports, executor, workers
    records_per_task = max(1, min(auto_records_per_task(args.crop), n // args.min_tasks))
    fields = tuple(f for f in (args.fields or "").split(",") if f)
    out = {"records_per_task": records_per_task, "fields": list(fields)}
    with PeakSampler() as driver:
        out["epochs"] = [stream_epoch(store, epoch, args.crop, args.batch, records_per_task, fields)
                         for epoch in range(args.epochs)]
    if fields:  # the fields' columns arrived in every batch
        batch = next(iter(train_crops(store, crop=args.crop, seed=0, epoch=0, records_per_task=records_per_task,
                                      fields=fields)[0].iter_batches(batch_size=8)))
        missing = [f for f in fields if f not in batch]
        if missing:
            raise SystemExit(f"the stream's batches lack {missing}")
    out["driver_growth"] = driver.growth
    # Opening + planning alone under tracemalloc (Python objects and numpy arrays; Arrow buffers are not traced).
    gc.collect()
    tracemalloc.start()
    with capture_datasource() as captured:
        train_crops(store, crop=args.crop, seed=0, epoch=0, records_per_task=records_per_task)
    out["plan_traced_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    source = captured[0]
    task = source.get_read_tasks(1)[1 if source.num_tasks() > 1 else 0]  # [0] is the short first task
    out["task_pickle_bytes"] = len(cloudpickle.dumps(task))  # what Ray ships: the closure holds the slice
    out["task_rows"] = task.metadata.num_rows
    out["task"] = read_task_memory(task)
    ray.shutdown()
    return out


def phase_open(args) -> dict:
    """Child process: private memory of an opened store (its tables: the per-record metadata every driver holds)."""
    from ecg_ray.data.store import EcgStore

    EcgStore(args.base)  # warm-up: imports and Arrow's memory pool
    gc.collect()
    before = proc_status("RssAnon")
    store = EcgStore(args.store)
    gc.collect()
    return {"open_growth": proc_status("RssAnon") - before, "records": len(store),
            "held_bytes": store.metadata_bytes()}


def run_phase(phase: str, args, store: Path, base: Path, records: int, length: int, fields: str = "") -> dict:
    """Run one phase in a fresh Python process (no allocator state left by the others); its JSON line."""
    command = [sys.executable, __file__, "--phase", phase, "--store", str(store), "--base", str(base),
               "--records", str(records), "--length", str(length), "--crop", str(args.crop),
               "--batch", str(args.batch), "--epochs", str(args.epochs), "--min-tasks", str(args.min_tasks),
               "--fields", fields]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{phase} phase for {records:,} records failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def steady_rate(epochs: list[dict]) -> float:
    """crops/s of the epochs after the first (which reads what the page cache kept of the write)."""
    rates = [x["crops_per_s"] for x in epochs]
    return float(np.median(rates[1:] if len(rates) > 1 else rates))


def report(n: int, length: int, build: dict, m: dict) -> None:
    size, seconds, writer = build["bytes"], build["write_s"], build["writer_growth"]
    task = m["task"]
    print(f"N={n:,} x {length} samples: store {size / 1e9:.2f} GB ({size / n:,.0f} B/record), written in "
          f"{seconds:.1f} s ({n / seconds:,.0f} records/s, {size / seconds / 1e6:.0f} MB/s), writer memory "
          f"+{writer / 1e6:.0f} MB ({writer / n:.0f} B/record)")
    for k, x in enumerate(m["epochs"]):
        print(f"  epoch {k}: {x['tasks']} read tasks of {m['records_per_task']:,} records, plan {x['plan_s']:.2f} s, "
              f"first batch {x['first_batch_s']:.2f} s, {x['crops']:,} crops at {x['crops_per_s']:,.0f} crops/s, "
              f"{x['disk_read'] / 1e9:.1f} GB read from disk (machine-wide)")
    print(f"  driver: private memory +{m['driver_growth'] / 1e6:.0f} MB over {len(m['epochs'])} epochs = "
          f"{m['driver_growth'] / n:.0f} B/record; open + plan traced peak {m['plan_traced_peak'] / 1e6:.0f} MB "
          f"= {m['plan_traced_peak'] / n:.0f} B/record; the opened store's tables alone +{m['open_growth'] / 1e6:.0f} MB "
          f"= {m['open_growth'] / n:.0f} B/record (the columns it holds: {m['held_bytes'] / n:.0f} B/record)")
    print(f"  read task ({m['task_rows']:,} crops, {m['task_pickle_bytes'] / 1e3:.0f} kB pickled): peak private "
          f"memory of its worker process {task['peak'] / 1e6:.0f} MB (the block it returns: "
          f"{task['block_bytes'] / 1e6:.0f} MB)")
    print(f"RESULT scale_{n} store_gb={size / 1e9:.3f} write_s={seconds:.1f} "
          f"first_batch_s={m['epochs'][-1]['first_batch_s']:.2f} crops_per_s={steady_rate(m['epochs']):.0f} "
          f"driver_bytes_per_record={m['driver_growth'] / n:.0f} task_peak_mb={task['peak'] / 1e6:.0f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="100000,1000000", help="comma-separated store sizes")
    parser.add_argument("--length", type=int, default=0, help="samples per record (100 Hz); 0 = the longest "
                        "that fits a third of the free disk at the largest N")
    parser.add_argument("--crop", type=int, default=250)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2, help="the first reads what the page cache kept")
    parser.add_argument("--min-tasks", type=int, default=100, help="read tasks per epoch, at least")
    parser.add_argument("--tmp", default=None, help="where the stores go (default: the system temp dir)")
    parser.add_argument("--fields", default="", help="comma-separated batch fields (patient_index,crop_start) "
                        "to stream a second time with, against the plain stream")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)  # child processes
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        args.records = int(args.records)
        print(json.dumps(PHASES[args.phase](args)))
        return 0
    sizes = sorted(int(s) for s in args.records.split(",") if s)
    tmp = Path(tempfile.mkdtemp(prefix="ecg_bench_scale_", dir=args.tmp))
    try:
        free = shutil.disk_usage(tmp).free
        length = choose_length(args.length, sizes[-1], args.crop, free)
        if length < args.crop:
            raise SystemExit(f"--length {length} is shorter than --crop {args.crop}")
        print(f"disk: {free / 1e9:.0f} GB free under {tmp}; records of {length} samples ({length / 100:.1f} s at "
              f"100 Hz): {sizes[-1]:,} records take {sizes[-1] * length * BYTES_PER_SAMPLE / 1e9:.1f} GB")
        kind = prepare_base(tmp / "base")
        print(f"tiling the 500 records of the {kind}", flush=True)
        last = []
        for n in sizes:
            store = tmp / f"store_{n}"
            build = run_phase("build", args, store, tmp / "base", n, length)
            m = run_phase("stream", args, store, tmp / "base", n, length)
            m.update(run_phase("open", args, store, tmp / "base", n, length))
            if not all(n - args.batch < x["crops"] <= n for x in m["epochs"]):
                raise SystemExit(f"an epoch of {n:,} records gave {[x['crops'] for x in m['epochs']]} crops")
            report(n, length, build, m)
            if args.fields:
                f = run_phase("stream", args, store, tmp / "base", n, length, args.fields)
                rate, base_rate = steady_rate(f["epochs"]), steady_rate(m["epochs"])
                print(f"  with {args.fields}: driver +{f['driver_growth'] / 1e6:.0f} MB = "
                      f"{f['driver_growth'] / n:.0f} B/record (plain stream {m['driver_growth'] / n:.0f}), "
                      f"{rate:,.0f} crops/s (plain {base_rate:,.0f}); read task peak {f['task']['peak'] / 1e6:.0f} MB")
                print(f"RESULT scale_fields_{n} driver_bytes_per_record={f['driver_growth'] / n:.0f} "
                      f"baseline_driver_bytes_per_record={m['driver_growth'] / n:.0f} crops_per_s={rate:.0f} "
                      f"baseline_crops_per_s={base_rate:.0f} ratio={rate / base_rate:.3f}", flush=True)
            last.append((n, m))
            shutil.rmtree(store)
        n, m = last[-1]
        if len(last) > 1:  # what each further record costs the driver, without the fixed cost of streaming
            n0, m0 = last[0]
            print(f"driver: each record beyond {n0:,} adds {(m['driver_growth'] - m0['driver_growth']) / (n - n0):.0f} "
                  f"bytes of private memory (fixed part at {n0:,}: "
                  f"{(m0['driver_growth'] - n0 * (m['driver_growth'] - m0['driver_growth']) / (n - n0)) / 1e6:.0f} MB)")
        print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} cores")
        print(f"RESULT scale driver_bytes_per_record={m['driver_growth'] / n:.0f}")
        print(f"RESULT scale crops_per_s={steady_rate(m['epochs']):.0f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


PHASES = {"build": phase_build, "open": phase_open, "stream": phase_stream}

if __name__ == "__main__":
    sys.exit(main())
