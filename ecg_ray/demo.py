"""``make demo``: the main job on embedded synthetic data, no download needed.

Today it prepares a labelled synthetic 12-lead store, prints its summary and streams one epoch
of random 2.5 s crops through Ray Data on a local Ray instance. Pretraining, evaluation and the
report join this script as they land (see the README's roadmap).

Usage: python -m ecg_ray.demo [--out demo_out] [--records 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ecg_ray.cli import main as cli_main


def run(out: Path, records: int) -> int:
    store = out / "synthetic.zarr"
    print(f"[demo] 1/2 prepare {records} synthetic 12-lead records -> {store}")
    code = cli_main(["prepare", "synthetic", "--out", str(store), "--records", str(records), "--overwrite"])
    if code:
        return code

    print("[demo] 2/2 stream one epoch of random 2.5 s crops through Ray Data")
    import ray
    from ray.data import DataContext

    from ecg_ray.data.store import EcgStore
    from ecg_ray.data.stream import select_records, train_crops

    ray.init(num_cpus=2, object_store_memory=500_000_000, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    DataContext.get_current().enable_progress_bars = False
    try:
        opened = EcgStore(store)
        train = select_records(opened, folds=range(1, 9))
        dataset, info = train_crops(opened, train, crop=250, seed=0, epoch=0, with_labels=True)
        start, n, shape = time.perf_counter(), 0, None
        for batch in dataset.iter_torch_batches(batch_size=256):
            n += batch["signal"].shape[0]
            shape = shape or tuple(batch["signal"].shape)
        elapsed = time.perf_counter() - start
    finally:
        ray.shutdown()
    print(f"[demo] streamed {n} crops of {info.records} training records (folds 1-8) in {elapsed:.1f} s; "
          f"batch shape {shape}")
    print(f"[demo] done. Inspect the store with: ecg-ray inspect {store}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args(argv)
    return run(args.out, args.records)


if __name__ == "__main__":
    sys.exit(main())
