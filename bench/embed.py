"""Benchmark: ``ecg-ray embed`` throughput against the encoder's own forward pass on the same windows.

Run:  .venv/bin/python bench/embed.py [--records 100000] [--encoder tiny|xresnet1d50] [--length 300]
      [--workers N]

A store of ``--records`` short records (``--length`` samples at 100 Hz, one 2.5 s window each with
the default length) is written in a subprocess (so the driver's peak memory is the embedding's
alone), then embedded twice:

1. **pipeline**: ``embed_store`` (Ray Data read tasks, an actor pool of ``--workers`` CPU actors,
   one torch thread each, Parquet written by the driver), records/s from the start of the Ray
   Data run to the renamed file (actor start-up included);
2. **baseline**: the same encoder in this process with as many torch threads as the pipeline has
   actors, over the same windows already in memory (cut beforehand, not timed), batches of 256.

``ratio = pipeline / baseline``: 1.0 means the pipeline costs nothing beyond the encoder; below
1, the share lost to reading, cutting, Ray Data and writing. ``tiny`` is a 16-wide conv encoder
that costs almost nothing, so its ratio shows the pipeline's own ceiling; ``xresnet1d50`` is the
package's default encoder. Prints ``RESULT embed records_per_s=.. bytes_per_record=.. ratio=..``
(bytes of the Parquet file per record) and the driver's peak-RSS growth per record.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny_encoder():
    """A 16-wide conv + mean encoder (pickled by value from this script: the actors need no import)."""
    import torch
    from torch import nn

    from ecg_ray.models.registry import Encoder

    class Tiny(Encoder):
        def __init__(self, in_channels: int = 12):
            super().__init__()
            self.conv = nn.Conv1d(in_channels, 16, 5, padding=2)
            self.feature_dim, self.downsample = 16, 1

        def forward(self, x):
            return torch.tanh(self.conv(x)).mean(-1)

    return Tiny


def build_store(out: Path, records: int, length: int) -> None:
    """``records`` synthetic records of ``length`` samples (sines with a per-record phase), one StoreWriter."""
    from ecg_ray.data.sources.base import Record
    from ecg_ray.data.store_writer import StoreWriter

    writer = StoreWriter(out, fs=100.0)
    t = np.arange(length, dtype=np.float32) / 100.0
    leads = np.arange(12, dtype=np.float32)[None, :]
    for i in range(records):
        signal = np.sin(2 * np.pi * (1.0 + leads / 12) * t[:, None] + 0.37 * i).astype(np.float32)
        writer.add(Record(id=f"r{i:07d}", dataset="bench", file=f"bench/{i}", signal=signal, fs=100.0,
                          fs_original=100.0, labels=["NORM"], metadata={"fold": 1 + i % 10, "patient_id": f"p{i}"}))
    writer.finalize(sources=[{"kind": "bench-embed", "records": records}], label_names=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--length", type=int, default=300, help="samples per record at 100 Hz")
    parser.add_argument("--encoder", choices=("tiny", "xresnet1d50"), default="tiny")
    parser.add_argument("--workers", type=int, default=None, help="actors (default: CPUs - 1)")
    parser.add_argument("--store", type=Path, default=None, help="reuse a store built earlier")
    parser.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only is not None:
        build_store(args.build_only, args.records, args.length)
        return

    import torch

    from ecg_ray.data.store import EcgStore
    from ecg_ray.data.windows import read_windows
    from ecg_ray.embedding import EncoderSource, embed_store
    from ecg_ray.models.registry import _ENCODERS, register_encoder

    tmp = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        store_path = args.store
        if store_path is None:
            store_path = tmp / "store"
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--records", str(args.records), "--length", str(args.length),
                            "--build-only", str(store_path)], check=True)
            print(f"store: {args.records} records of {args.length} samples in {time.perf_counter() - start:.1f} s")
        name = args.encoder
        if name == "tiny":
            name = "bench_tiny_encoder"
            register_encoder(name)(tiny_encoder())
        source = EncoderSource(name=name, state_dict=None, fs=100.0, input_length=250, seed=0)
        store = EcgStore(store_path)
        out = tmp / "emb.parquet"
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        summary = embed_store(source, store, str(out), window=250, stride=125, workers=args.workers, progress=True)
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
        records = summary["records"]
        pipeline = summary["records_per_s"]
        file_bytes = out.stat().st_size

        # baseline: the encoder alone on the same windows, as many threads as the pipeline had actors
        sample = np.arange(0, len(store), max(1, len(store) // 20_000))  # up to 20k records, spread out
        windows = read_windows(store, sample, 250, 125)
        encoder = source.build()
        torch.set_num_threads(summary["workers"])
        x = torch.from_numpy(windows.signal)
        with torch.no_grad():
            encoder(x[:256])  # warm-up
            start = time.perf_counter()
            for k in range(0, len(x), 256):
                encoder(x[k:k + 256])
            seconds = time.perf_counter() - start
        baseline = len(sample) / seconds
        _ENCODERS.pop("bench_tiny_encoder", None)
        print(f"pipeline: {records} records ({summary['windows']} windows), {summary['read_tasks']} read tasks, "
              f"{summary['workers']} actor(s), {summary['seconds']:.1f} s")
        print(f"baseline: {len(sample)} records' windows through {args.encoder} in-process, "
              f"{summary['workers']} thread(s), {seconds:.2f} s")
        print(f"RESULT embed_{args.encoder} records_per_s={pipeline:.0f} bytes_per_record={file_bytes / records:.1f} "
              f"baseline_records_per_s={baseline:.0f} ratio={pipeline / baseline:.3f}")
        print(f"RESULT embed_{args.encoder}_driver peak_rss_bytes_per_record={rss_growth / records:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
