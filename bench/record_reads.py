"""Benchmark: whole-record reads for evaluation and the online probe at 1M records, grouped vs one by one.

Run:  .venv/bin/python bench/record_reads.py [--records 1000000] [--sample 4000] [--fold-every 10]

A store of ``--records`` short records (60 samples, as bench/corpus_scale.py writes it) is read two
ways, same run, same store, page cache warm for both (a first untimed pass):

1. **probe**: ``--sample`` records drawn at random (what ``linear_probe_auc`` reads, once per run now);
2. **fold**: every ``--fold-every``-th record (an evaluation fold: ``predict_records``).

Baseline: ``EcgStore.signal`` per record (the old path). Candidate: ``ecg_ray.data.records.read_records``
(neighbours grouped into spans of <= 2 chunks, one read per span). Also reports the probe's windows
cache: the second ``probe_windows`` call against the first.

Prints ``RESULT record_reads_<probe|fold> grouped_vs_single ratio=..`` (records/s of grouped over
single; > 1 is faster) and ``RESULT probe_windows cached_vs_first ratio=..``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--length", type=int, default=60)
    parser.add_argument("--sample", type=int, default=4000)
    parser.add_argument("--fold-every", type=int, default=10)
    parser.add_argument("--max-single", type=int, default=20_000,
                        help="time the one-by-one baseline on at most this many records (rate extrapolated)")
    args = parser.parse_args()

    from bench.corpus_scale import write_store
    from ecg_ray.data.records import read_records
    from ecg_ray.data.store import EcgStore
    from ecg_ray.evaluation import probe

    tmp = Path(tempfile.mkdtemp(prefix="ecg_ray-record-reads-"))
    try:
        start = time.perf_counter()
        store = EcgStore(write_store(tmp / "store", args.records, args.length, 131_072))
        print(f"store: {args.records:,} records x {args.length} samples, written in {time.perf_counter() - start:.0f} s")
        rng = np.random.default_rng(0)
        cases = {"probe": np.sort(rng.choice(args.records, args.sample, replace=False)),
                 "fold": np.arange(0, args.records, args.fold_every)}
        for name, indices in cases.items():
            read_records(store, indices)  # warm the page cache for both readers
            grouped = timed(lambda indices=indices: read_records(store, indices))
            single_idx = indices[:args.max_single]
            single = timed(lambda single_idx=single_idx: [store.signal(int(i)) for i in single_idx])
            rate_grouped, rate_single = len(indices) / grouped, len(single_idx) / single
            print(f"{name}: {len(indices):,} records: grouped {rate_grouped:,.0f} records/s "
                  f"({grouped:.2f} s), one by one {rate_single:,.0f} records/s (on {len(single_idx):,})")
            print(f"RESULT record_reads_{name} grouped_vs_single ratio={rate_grouped / rate_single:.1f}")
        train_idx, val_idx = cases["probe"][::2], cases["probe"][1::2]
        probe._CACHE.clear()
        kwargs = {"window": 50, "stride": 25, "max_records": 2000, "seed": 0}
        first = timed(lambda: probe.probe_windows(store, train_idx, val_idx, **kwargs))
        again = timed(lambda: probe.probe_windows(store, train_idx, val_idx, **kwargs))
        print(f"probe windows: first {first * 1000:.1f} ms, cached {again * 1000:.3f} ms, "
              f"{probe.probe_windows(store, train_idx, val_idx, **kwargs).nbytes / 2**20:.1f} MiB held")
        print(f"RESULT probe_windows cached_vs_first ratio={first / max(again, 1e-9):.0f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
