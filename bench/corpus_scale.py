"""Benchmark: the training stream at corpus scale (1M records), global shuffle against store order.

Run:  .venv/bin/python bench/corpus_scale.py [--records 1000000] [--plan-records 10000000]

1. **Planning** (no Ray work): ``plan_epoch`` (draw, seeded permutation, shard) and the datasource's
   ``get_read_tasks`` for one worker of 8, at ``--records`` and ``--plan-records`` records: seconds,
   and bytes of plan per record (tracemalloc peak).
2. **Streaming** a store of ``--records`` short records (60 samples, crops of 50, written in two
   groups like a corpus written source by source): crops/s of one worker's stream with the global
   shuffle against the same stream read in store order (``data.shuffle=false``), same run, same
   store. With the raw-chunk ``pread`` reader a crop costs the same wherever its record lies, so the
   ratio should stay near 1 however large the store; batches' group share shows the mixing.

Prints ``RESULT corpus_scale_plan_<N> s=.. bytes_per_record=..`` and
``RESULT corpus_scale shuffle_vs_ordered ratio=..`` last.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_store(out: Path, records: int, length: int, chunk_samples: int) -> Path:
    """``records`` records of ``length`` samples, first half group A then group B (lead 0 = group)."""
    from ecg_ray.data.sources.base import Record
    from ecg_ray.data.store_writer import StoreWriter

    writer = StoreWriter(out, fs=100.0, codec="none", chunk_samples=chunk_samples)
    a = np.zeros((length, 12), np.float32)
    b = np.ones((length, 12), np.float32)
    for i in range(records):
        group = i >= records // 2
        writer.add(Record(id=f"r{i}", dataset="B" if group else "A", file="", signal=b if group else a, fs=100.0,
                          fs_original=100.0, labels=[], metadata={"patient_id": f"p{i}"}))
    writer.finalize(sources=[{"kind": "bench-corpus-scale"}], label_names=None)
    return out


class _FakeStore:
    """Enough of an EcgStore for planning without a store on disk (the 10M-record case)."""

    def __init__(self, n: int):
        self.path = f"fake-{n}"


def bench_plan(n: int, workers: int = 8) -> tuple[float, float]:
    from ecg_ray.data.sampling import StorePart, plan_epoch
    from ecg_ray.data.stream import _datasource, _ReadSpec

    part = StorePart(_FakeStore(n), np.arange(n, dtype=np.int64))
    offsets = np.arange(n, dtype=np.int64) * 1000
    lengths = np.full(n, 1000, dtype=np.int64)
    tracemalloc.start()
    start = time.perf_counter()
    plan = plan_epoch([part], seed=0, epoch=1, shard_index=3, num_shards=workers)
    spec = _ReadSpec(stores=("x",), versions=("",), chunks=(131072,), mode="crops", width=250)
    source = _datasource(spec, plan.part_ids, plan.indices, offsets[plan.indices], lengths[plan.indices], None, 4096)
    tasks = source.get_read_tasks(1)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sum(t.metadata.num_rows for t in tasks) == n // workers
    return seconds, peak / n


def bench_stream(store: Path, shuffle: bool, epochs: int, crop: int, batch: int) -> tuple[float, float]:
    """crops/s of worker 0 of 2, and the largest deviation of a batch's group-B share from 0.5."""
    from ecg_ray.data.stream import train_crops

    rates, worst = [], 0.0
    for epoch in range(epochs + 1):
        dataset, _ = train_crops(store, crop=crop, seed=0, epoch=epoch, shard_index=0, num_shards=2, shuffle=shuffle)
        n, start = 0, time.perf_counter()
        for x in dataset.iter_torch_batches(batch_size=batch, drop_last=True):
            n += x["signal"].shape[0]
            worst = max(worst, abs(float(x["signal"][:, 0, 0].mean()) - 0.5))
        if epoch:  # the first epoch warms the page cache
            rates.append(n / (time.perf_counter() - start))
    return float(np.median(rates)), worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--plan-records", type=int, default=10_000_000)
    parser.add_argument("--length", type=int, default=60)
    parser.add_argument("--crop", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--chunk-samples", type=int, default=131072,
                        help="zarr chunk length; 8192 gives a 1M x 60-sample store the ~7,300 chunks of a real "
                             "1M x 10 s store (beyond MAPPED_CHUNKS: the preadv reader)")
    args = parser.parse_args()

    import logging

    import ray
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one INFO line per epoch's dataset otherwise
    for n in (args.records, args.plan_records):
        seconds, per_record = bench_plan(n)
        print(f"plan one epoch of {n:,} records for worker 3 of 8 (draw, permutation, shard, read tasks): "
              f"{seconds:.2f} s, {per_record:.0f} bytes per record of the corpus")
        print(f"RESULT corpus_scale_plan_{n} s={seconds:.3f} bytes_per_record={per_record:.1f}")

    tmp = Path(tempfile.mkdtemp(prefix="ecg_bench_scale_"))
    try:
        start = time.perf_counter()
        store = write_store(tmp / "store", args.records, args.length, args.chunk_samples)
        size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        from ecg_ray.data.cutting import MAPPED_CHUNKS, raw_chunk_count

        chunks = raw_chunk_count(str(store))
        print(f"store: {args.records:,} records x {args.length} samples, {size / 1e9:.2f} GB in {chunks:,} chunks "
              f"({'memory-mapped' if chunks <= MAPPED_CHUNKS else 'preadv'} reader), written in "
              f"{time.perf_counter() - start:.0f} s")
        ray.init(num_cpus=2, object_store_memory=1_000_000_000, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        DataContext.get_current().enable_progress_bars = False
        DataContext.get_current().print_on_execution_start = False
        results = {}
        for shuffle in (False, True, False, True):  # interleaved: the machine is shared and noisy
            rate, worst = bench_stream(store, shuffle, args.epochs, args.crop, args.batch)
            results.setdefault(shuffle, []).append((rate, worst))
            print(f"  {'global shuffle' if shuffle else 'store order   '}: {rate:,.0f} crops/s, largest batch "
                  f"deviation from a 50 % group share: {worst:.3f}")
        ordered = float(np.median([r for r, _ in results[False]]))
        shuffled = float(np.median([r for r, _ in results[True]]))
        print(f"RESULT corpus_scale_shuffled samples_per_s={shuffled:.0f}")
        print(f"RESULT corpus_scale_ordered samples_per_s={ordered:.0f}")
        print(f"RESULT corpus_scale shuffle_vs_ordered ratio={shuffled / ordered:.3f}")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
