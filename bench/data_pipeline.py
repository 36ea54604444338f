"""Benchmark: our Ray Data crop stream against a lean in-process memmap + DataLoader baseline.

Run:  .venv/bin/python bench/data_pipeline.py [--records 20000] [--codecs none,lz4,zstd]

Both sides deliver the same thing (one random 2.5 s crop per record per epoch, (B, 12, 250)
float32 torch batches, records in a globally shuffled order) from the PTB-XL sample tiled to
``--records`` records, with the same batch size and CPU count. The baseline is the reference
code's approach: every record in one numpy memmap and a torch DataLoader (shuffled sampler:
a global shuffle) cutting one crop per ``__getitem__``. Ours runs with its default global
shuffle (``data.shuffle``; auto ``shuffle_block``: 1 on the raw store, a block shuffle on lz4/zstd).

Prints ``RESULT data_pipeline_ours samples_per_s=..``, ``RESULT data_pipeline_baseline
samples_per_s=..`` and last ``RESULT data_pipeline ratio=..`` (median ours / median baseline over
``--rounds`` interleaved rounds, default codec).

Then the cost of the read-path integrity checks (``ecg_ray.data.integrity``; ``--integrity-only``
runs just this part): per chunk and per record (sha256 + NaN/inf check of one chunk file, warm
page cache), the zarr path's per-batch NaN/inf check, a read task with the checks on vs off once
its chunks are verified (in-process), the verifier's memory at 1M records,
and the stream with the checks on vs off in the same run (first epoch, which verifies every
chunk, and the steady epochs after it; fresh copies of the store per round so the first epoch is
cold for the checks). Prints ``RESULT data_pipeline_verify first_epoch_ratio=..`` and
``RESULT data_pipeline_verify steady_ratio=..`` (checks on / off, medians).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PTBXL = ROOT.parent / "shared" / "data" / "ptb-xl-sample"
sys.path.insert(0, str(ROOT))


def build_tiled_store(base: Path, out: Path, records: int, codec: str) -> Path:
    """A store of ``records`` records by repeating the base store's records (real signals)."""
    from ecg_ray.data.sources.base import Record
    from ecg_ray.data.store import EcgStore
    from ecg_ray.data.store_writer import StoreWriter

    src = EcgStore(base)
    signals = src.signals()[:]
    rows = src.records
    writer = StoreWriter(out, fs=src.fs, codec=codec)
    for i in range(records):
        row = rows.iloc[i % len(rows)]
        sig = signals[int(row["offset"]):int(row["offset"]) + int(row["length"])]
        writer.add(Record(id=f"{row['id']}_{i // len(rows)}", dataset="ptbxl", file=str(row["file"]),
                          signal=sig, fs=src.fs, fs_original=float(row["fs_original"]), labels=["NORM"],
                          metadata={"fold": int(row["fold"]), "patient_id": str(row["patient_id"])}))
    writer.finalize(sources=[{"kind": "tiled", "base": str(base)}], label_names=None)
    return out


def reference_loader(store_path: Path, batch: int, workers: int, crop: int, tmp: Path):
    """The reference code's loader: one .npy memmap of every record + DataLoader(shuffle=True), one random
    crop per ``__getitem__``. Writes ``tmp/all.npy``."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from ecg_ray.data.store import EcgStore

    store = EcgStore(store_path)
    raw = tmp / "all.npy"
    np.save(raw, store.signals()[:])  # the reference keeps one big .npy memmap
    offsets = store.records["offset"].to_numpy()
    lengths = store.records["length"].to_numpy()

    class CropDataset(Dataset):
        def __init__(self):
            self.data = None

        def __len__(self):
            return len(offsets)

        def __getitem__(self, i):
            if self.data is None:  # open per worker process
                self.data = np.load(raw, mmap_mode="r")
            start = offsets[i] + np.random.randint(0, lengths[i] - crop + 1)
            return torch.from_numpy(np.ascontiguousarray(self.data[start:start + crop].T))

    return DataLoader(CropDataset(), batch_size=batch, shuffle=True, num_workers=workers,
                      drop_last=True, persistent_workers=workers > 0)


def bench_baseline(store_path: Path, batch: int, workers: int, crop: int, epochs: int) -> float:
    """memmap of all records + DataLoader with one random crop per __getitem__."""
    tmp = Path(tempfile.mkdtemp())
    loader = reference_loader(store_path, batch, workers, crop, tmp)
    for _ in loader:  # warm-up epoch (page cache, worker start)
        pass
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x in loader:
            n += x.shape[0]
    rate = n / (time.perf_counter() - start)
    shutil.rmtree(tmp)
    return rate


def bench_ours_driver(store_path: Path, batch: int, crop: int, epochs: int) -> float:
    from ecg_ray.data.stream import train_crops

    def run(epoch):
        dataset, _ = train_crops(store_path, crop=crop, seed=0, epoch=epoch)
        n = 0
        for x in dataset.iter_torch_batches(batch_size=batch, drop_last=True):
            n += x["signal"].shape[0]
        return n

    run(0)  # warm-up
    n, start = 0, time.perf_counter()
    for e in range(epochs):
        n += run(e + 1)
    return n / (time.perf_counter() - start)


def bench_ours_trainer(store_path: Path, batch: int, crop: int, epochs: int) -> float:
    """The same stream consumed inside a 1-worker TorchTrainer (the path pretraining uses)."""
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def train_func(config):
        from ecg_ray.data.stream import train_crops

        def run(epoch):
            dataset, _ = train_crops(config["store"], crop=config["crop"], seed=0, epoch=epoch)
            n = 0
            for x in dataset.iter_torch_batches(batch_size=config["batch"], drop_last=True):
                n += x["signal"].shape[0]
            return n

        run(0)
        n, start = 0, time.perf_counter()
        for e in range(config["epochs"]):
            n += run(e + 1)
        rate = n / (time.perf_counter() - start)
        # Train V2 keeps only metrics attached to checkpoints; a file is simpler for one number.
        Path(config["result_file"]).write_text(str(rate))
        ray.train.report({"samples_per_s": rate})

    storage = tempfile.mkdtemp()
    result_file = Path(storage) / "rate.txt"
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"store": str(store_path), "crop": crop, "batch": batch, "epochs": epochs,
                           "result_file": str(result_file)},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=storage, name="bench_data"),
    )
    trainer.fit()
    rate = float(result_file.read_text())
    shutil.rmtree(storage, ignore_errors=True)
    return rate


def chunk_check_cost(store_path: Path, repeats: int = 3) -> dict:
    """Seconds to verify every chunk of a raw store once (sha256 + NaN/inf), outside Ray (per process)."""
    from ecg_ray.data.integrity import ChunkVerifier, chunk_key
    from ecg_ray.data.store import EcgStore

    store = EcgStore(store_path)
    chunks = [k for k in range(int(store.manifest["samples"]) // store.manifest["chunk_samples"] + 1)
              if chunk_key(k) in store.manifest["checksums"]]
    paths = [str(store_path / "signals" / "c" / str(k) / "0") for k in chunks]
    size = sum(os.path.getsize(p) for p in paths)
    times = []
    for _ in range(repeats):  # the first pass also warms the page cache; the median is warm
        verifier = ChunkVerifier(str(store_path), store.manifest)
        t0 = time.perf_counter()
        for k, path in zip(chunks, paths, strict=True):
            verifier.check_file(k, path)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    records_per_chunk = store.manifest["chunk_samples"] / float(np.median(store.records["length"]))
    return {"chunks": len(chunks), "bytes": size, "seconds": seconds, "ms_per_chunk": 1e3 * seconds / len(chunks),
            "gb_per_s": size / seconds / 1e9, "us_per_record": 1e6 * seconds / len(chunks) / records_per_chunk}


def batch_check_cost(crop: int, rows: int = 8192, repeats: int = 20) -> float:
    """Seconds of ``np.isfinite(batch).all()`` on one full read task's crops (the zarr path's NaN/inf check)."""
    batch = np.random.default_rng(0).normal(size=(rows, 12, crop)).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(repeats):
        np.isfinite(batch).all()
    return (time.perf_counter() - t0) / repeats


def steady_check_cost(raw: Path, zstd: Path, crop: int, rows: int = 8192, repeats: int = 15) -> dict:
    """Seconds per read task with the checks on vs off once every chunk is verified (in-process, interleaved,
    the fastest of the repeats: decoding a ~1 GB span makes single zstd runs scatter 2x).

    Raw store: one task of ``rows`` random crops through the memory maps. zstd store: 64 runs of
    128 consecutive records (a block-shuffled task), decoded through zarr, its crops checked for NaN/inf.
    """
    from ecg_ray.data.cutting import cut_raw_chunks, cut_through_zarr, raw_chunk_layout
    from ecg_ray.data.store import EcgStore

    rng = np.random.default_rng(0)
    out = {}
    store = EcgStore(raw)
    chunk = raw_chunk_layout(str(raw))
    offsets, lengths = store.records["offset"].to_numpy(), store.records["length"].to_numpy()
    pick = rng.integers(0, len(store), rows)
    starts = offsets[pick] + (rng.random(rows) * (lengths[pick] - crop + 1)).astype(np.int64)
    zstore = EcgStore(zstd)
    runs = (rng.integers(0, len(zstore) // 128, 64)[:, None] * 128 + np.arange(128)).reshape(-1)
    runs = np.sort(runs)
    zoff, zlen = zstore.records["offset"].to_numpy()[runs], zstore.records["length"].to_numpy()[runs]
    zstarts = (rng.random(len(runs)) * (zlen - crop + 1)).astype(np.int64)
    tasks = {"none": lambda verify: cut_raw_chunks(str(raw), chunk, starts, crop, store.version, mapped=True,
                                                   verify=verify),
             "zstd": lambda verify: cut_through_zarr(str(zstd), zoff, zlen, zstarts, crop, zstore.version,
                                                     verify=verify)}
    for codec, task in tasks.items():
        task(True)  # verify every chunk this task touches (the first epoch's cost, measured above)
        task(False)
        times = {True: [], False: []}
        for _ in range(repeats if codec == "none" else 7):
            for verify in (True, False):
                t0 = time.perf_counter()
                task(verify)
                times[verify].append(time.perf_counter() - t0)
        out[codec] = (min(times[True]), min(times[False]), len(starts) if codec == "none" else len(runs))
    return out


def verifier_memory(records: int = 1_000_000, length: int = 1000) -> dict:
    """Time and memory to build one process's verifier for a store of ``records`` 10 s records at 100 Hz."""
    import tracemalloc

    from ecg_ray.data.integrity import ChunkVerifier, chunk_key
    from ecg_ray.data.store import DEFAULT_CHUNK_SAMPLES

    chunks = math.ceil(records * length / DEFAULT_CHUNK_SAMPLES)
    checksums = {chunk_key(k): hashlib.sha256(str(k).encode()).hexdigest() for k in range(chunks)}
    manifest_text = json.dumps({"created": "2026-01-01T00:00:00Z", "chunk_samples": DEFAULT_CHUNK_SAMPLES,
                                "checksums": checksums}, indent=1)
    tracemalloc.start()
    t0 = time.perf_counter()
    verifier = ChunkVerifier("/nonexistent/store", json.loads(manifest_text))  # what each process does once
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"records": records, "chunks": chunks, "manifest_bytes": len(manifest_text), "seconds": seconds,
            "peak_bytes": peak, "kept_bytes": verifier.expected.nbytes + verifier.listed.nbytes}


def bench_checks_stream(store_path: Path, batch: int, crop: int, epochs: int, verify: bool) -> tuple[float, float]:
    """(seconds of the first epoch, crops/s of the next ``epochs``) of the driver stream, checks on or off."""
    from ecg_ray.data.stream import train_crops

    def run(epoch):
        dataset, _ = train_crops(store_path, crop=crop, seed=0, epoch=epoch, verify=verify)
        return sum(x["signal"].shape[0] for x in dataset.iter_torch_batches(batch_size=batch, drop_last=True))

    t0 = time.perf_counter()
    run(0)
    first = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    for e in range(epochs):
        n += run(e + 1)
    return first, n / (time.perf_counter() - t0)


def bench_integrity(stores: dict[str, Path], tmp: Path, args) -> None:
    """Costs of the read-path checks: printed, RESULT lines last (see the module docstring)."""
    firsts, steadies = {}, {}
    for codec in stores:
        bench_checks_stream(stores[codec], args.batch, args.crop, 0, False)  # start Ray's workers first
        for round_no in range(args.rounds):
            for verify in (False, True) if round_no % 2 == 0 else (True, False):  # alternate who goes first
                # A fresh copy: nothing of it verified, mapped or cached yet in this run.
                copy = tmp / f"checks_{codec}_{round_no}_{verify}"
                shutil.copytree(stores[codec], copy)
                first, steady = bench_checks_stream(copy, args.batch, args.crop, args.epochs, verify)
                shutil.rmtree(copy)
                firsts.setdefault((codec, verify), []).append(first)
                steadies.setdefault((codec, verify), []).append(steady)
                print(f"round {round_no + 1}: codec={codec} checks {'on ' if verify else 'off'}: first epoch "
                      f"{first:.2f} s, then {steady:,.0f} crops/s")
            if codec != "none":
                break  # compressed: one round is plenty
    ratios = {}
    for codec in stores:
        first_on, first_off = (float(np.median(firsts[codec, v])) for v in (True, False))
        steady_on, steady_off = (float(np.median(steadies[codec, v])) for v in (True, False))
        ratios[codec] = (first_off / first_on, steady_on / steady_off)
        print(f"median, codec={codec}: first epoch {first_on:.2f} s with checks, {first_off:.2f} s without "
              f"(throughput ratio {ratios[codec][0]:.3f}); steady {steady_on:,.0f} vs {steady_off:,.0f} crops/s "
              f"(ratio {ratios[codec][1]:.3f})")
    print(f"RESULT data_pipeline_verify first_epoch_ratio={ratios['none'][0]:.3f}")
    print(f"RESULT data_pipeline_verify steady_ratio={ratios['none'][1]:.3f}")


def integrity_costs(store_path: Path, zstd_path: Path, crop: int) -> None:
    """The per-chunk, per-batch and memory figures (no Ray: a plain process, warm page cache)."""
    cost = chunk_check_cost(store_path)
    print(f"chunk check (sha256 + NaN/inf, once per chunk per node and run): {cost['chunks']} chunks, "
          f"{cost['bytes'] / 1e6:.0f} MB in {cost['seconds']:.2f} s = {cost['ms_per_chunk']:.2f} ms/chunk, "
          f"{cost['gb_per_s']:.2f} GB/s, {cost['us_per_record']:.1f} us/record")
    per_batch = batch_check_cost(crop)
    print(f"per-batch NaN/inf check (np.isfinite(batch).all(), 8192 crops of {crop}): {per_batch * 1e3:.2f} ms per "
          f"read task = {per_batch / 8192 * 1e9:.0f} ns/crop, every epoch (zarr path; raw chunks are checked once)")
    memory = verifier_memory()
    print(f"verifier per process at {memory['records']:,} records ({memory['chunks']:,} chunks; manifest "
          f"{memory['manifest_bytes'] / 1e6:.2f} MB): built in {memory['seconds'] * 1e3:.0f} ms, peak "
          f"{memory['peak_bytes'] / 1e6:.1f} MB while parsing, {memory['kept_bytes'] / 1e3:.0f} kB kept; "
          f"node bitmap {memory['chunks'] / 1e3:.1f} kB; a full verification of that store = "
          f"{memory['chunks'] * cost['ms_per_chunk'] / 1e3:.0f} CPU-s per node per run")
    steady = steady_check_cost(store_path, zstd_path, crop)
    for codec, (on, off, n) in steady.items():
        print(f"steady read task, codec={codec} ({n} crops, chunks verified): {on * 1e3:.2f} ms with checks, "
              f"{off * 1e3:.2f} ms without ({(on - off) / n * 1e9:+.0f} ns/crop, ratio off/on {off / on:.3f})")
    print(f"RESULT data_pipeline_verify ms_per_chunk={cost['ms_per_chunk']:.3f}")
    print(f"RESULT data_pipeline_verify us_per_record={cost['us_per_record']:.2f}")
    print(f"RESULT data_pipeline_verify kb_per_process_1m={memory['kept_bytes'] / 1e3:.0f}")
    print(f"RESULT data_pipeline_verify steady_task_ratio={steady['none'][1] / steady['none'][0]:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--crop", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved baseline/ours rounds (medians)")
    parser.add_argument("--codecs", default="none,lz4,zstd", help="store codecs to compare")
    parser.add_argument("--no-trainer", action="store_true", help="skip the TorchTrainer measurement")
    parser.add_argument("--integrity-only", action="store_true",
                        help="measure only the read-path integrity checks (codec none and zstd)")
    args = parser.parse_args()
    if not (PTBXL / "ptbxl_database.csv").exists():
        print(f"SKIP: PTB-XL sample not found at {PTBXL}")
        return 0

    import ray
    from ray.data import DataContext

    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.ptbxl import PtbxlSource
    from ecg_ray.data.store import DEFAULT_CODEC, EcgStore

    cpus = os.cpu_count() or 2
    tmp = Path(tempfile.mkdtemp(prefix="ecg_bench_"))
    try:
        base = tmp / "base"
        t0 = time.perf_counter()
        prepare_store([PtbxlSource(PTBXL)], base, workers=cpus, progress=False)
        print(f"prepare PTB-XL sample (500 records): {time.perf_counter() - t0:.2f} s")
        raw_bytes = sum(p.stat().st_size for p in (PTBXL / "records100").rglob("*") if p.is_file())
        raw_bytes = raw_bytes * args.records / 500
        codecs = [c for c in args.codecs.split(",") if c] if not args.integrity_only else ["none", "zstd"]
        if DEFAULT_CODEC not in codecs:
            codecs.insert(0, DEFAULT_CODEC)
        stores = {}
        for codec in codecs:
            t0 = time.perf_counter()
            stores[codec] = build_tiled_store(base, tmp / f"tiled_{codec}", args.records, codec)
            size = EcgStore(stores[codec]).summary()["bytes"]
            print(f"store codec={codec}: {size / 1e6:.0f} MB ({size / raw_bytes:.2f} x raw WFDB int16 "
                  f"{raw_bytes / 1e6:.0f} MB), written in {time.perf_counter() - t0:.1f} s")

        if "zstd" not in stores:
            stores["zstd"] = build_tiled_store(base, tmp / "tiled_zstd", args.records, "zstd")
        integrity_costs(stores["none"], stores["zstd"], args.crop)  # before Ray: a plain process's view

        ray.init(num_cpus=cpus, object_store_memory=1_000_000_000, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        DataContext.get_current().enable_progress_bars = False
        DataContext.get_current().print_on_execution_start = False
        if args.integrity_only:
            bench_integrity({c: stores[c] for c in ("none", "zstd")}, tmp, args)
            return 0

        # Rounds interleave the baseline and ours (the machine is shared); medians are compared.
        baselines, results = [], {codec: [] for codec in codecs}
        for round_no in range(args.rounds):
            baselines.append(bench_baseline(stores[DEFAULT_CODEC], args.batch, cpus, args.crop, args.epochs))
            print(f"round {round_no + 1}: baseline memmap + DataLoader ({cpus} workers, shuffled sampler): "
                  f"{baselines[-1]:,.0f} crops/s")
            for codec in (codecs if round_no == 0 else [DEFAULT_CODEC]):  # compressed: one round is plenty
                results[codec].append(bench_ours_driver(stores[codec], args.batch, args.crop, args.epochs))
                print(f"round {round_no + 1}: ours, driver, global shuffle, codec={codec}: "
                      f"{results[codec][-1]:,.0f} crops/s (ratio {results[codec][-1] / baselines[-1]:.2f})")
        baseline = float(np.median(baselines))
        results = {codec: float(np.median(rates)) for codec, rates in results.items()}
        for codec in codecs:
            print(f"median ours, codec={codec}: {results[codec]:,.0f} crops/s (ratio {results[codec] / baseline:.2f})")
        if not args.no_trainer:
            inside = bench_ours_trainer(stores[DEFAULT_CODEC], args.batch, args.crop, args.epochs)
            print(f"ours, inside a 1-worker TorchTrainer, codec={DEFAULT_CODEC}: {inside:,.0f} crops/s "
                  f"(ratio {inside / baseline:.2f})")
            print(f"RESULT data_pipeline_trainer samples_per_s={inside:.0f}")
        print("pretraining step consumption: measured by bench/pretrain_step.py once the methods exist")
        bench_integrity({DEFAULT_CODEC: stores[DEFAULT_CODEC]}, tmp, args)  # the data_pipeline RESULTs stay last
        ours = results[DEFAULT_CODEC]
        print(f"RESULT data_pipeline_ours samples_per_s={ours:.0f}")
        print(f"RESULT data_pipeline_baseline samples_per_s={baseline:.0f}")
        print(f"RESULT data_pipeline ratio={ours / baseline:.3f}")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
