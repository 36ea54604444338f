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
"""

from __future__ import annotations

import argparse
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
    from ecg_ray.data.store import EcgStore, StoreWriter

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--crop", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved baseline/ours rounds (medians)")
    parser.add_argument("--codecs", default="none,lz4,zstd", help="store codecs to compare")
    parser.add_argument("--no-trainer", action="store_true", help="skip the TorchTrainer measurement")
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
        codecs = [c for c in args.codecs.split(",") if c]
        if DEFAULT_CODEC not in codecs:
            codecs.insert(0, DEFAULT_CODEC)
        stores = {}
        for codec in codecs:
            t0 = time.perf_counter()
            stores[codec] = build_tiled_store(base, tmp / f"tiled_{codec}", args.records, codec)
            size = EcgStore(stores[codec]).summary()["bytes"]
            print(f"store codec={codec}: {size / 1e6:.0f} MB ({size / raw_bytes:.2f} x raw WFDB int16 "
                  f"{raw_bytes / 1e6:.0f} MB), written in {time.perf_counter() - t0:.1f} s")

        ray.init(num_cpus=cpus, object_store_memory=1_000_000_000, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        DataContext.get_current().enable_progress_bars = False
        DataContext.get_current().print_on_execution_start = False

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
