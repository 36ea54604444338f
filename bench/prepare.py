"""Benchmark: ``prepare --ray`` (Ray tasks) against the process pool, same input, same machine.

Run:  .venv/bin/python bench/prepare.py [--records 3000] [--cpus 2] [--repeats 2]

Inputs: ``--records`` synthetic records (10 s at 500 Hz generated, resampled to 100 Hz: the read
cost is of the order of a real WFDB read + resample) and, when ../shared/data holds it, the
PTB-XL sample (500 real records at 100 Hz). Each input is prepared by the pool
(``workers=--cpus``, in this process before Ray starts, as ``ecg-ray prepare`` runs it) and then
by Ray (a local instance with ``--cpus`` CPUs, started and warmed once before timing, as a
cluster is up before a prepare), best of ``--repeats`` each; the two stores are checked to be
bit-identical (every file but the manifest).

Prints per input ``pool records/s``, ``ray records/s`` and, for the synthetic input (the one of
any size), ``RESULT prepare ratio=`` (Ray / pool records per second; >= 0.8 wanted where both
have the same cores).

``--default-threads`` leaves the BLAS/OpenMP thread variables as the environment has them (a user's
shell) instead of setting them to 1, to measure what the pool's own per-process thread limit
(``ecg_ray.data.prepare``) is worth; ``--pool-only`` skips the Ray half and prints
``RESULT prepare pool_records_per_s=`` alone.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# One BLAS/OpenMP thread per process, for both paths, set before numpy loads: Ray sets this in
# its tasks itself and the pool now limits its processes itself (reader_threads.limit_threads), but the
# driver's own threads count too. Like for like. --default-threads (read here, before numpy loads)
# leaves the environment as it is, to measure the pool's own limit (bench/RESULTS.md).
if "--default-threads" not in sys.argv:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PTBXL = ROOT.parent / "shared" / "data" / "ptb-xl-sample"


def _hashes(store: Path) -> dict[str, str]:
    return {p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def _best_time(prepare, out: Path, repeats: int) -> tuple[float, dict]:
    """Best wall time of ``repeats`` runs; the last run's store stays at ``out``."""
    best, manifest = float("inf"), {}
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        manifest = prepare(out)
        best = min(best, time.perf_counter() - start)
    return best, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--default-threads", action="store_true",
                        help="keep the environment's BLAS/OpenMP thread settings (default: 1 thread per process)")
    parser.add_argument("--pool-only", action="store_true", help="time the process pool only, not Ray")
    args = parser.parse_args()

    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.synthetic import SyntheticSource

    inputs = {"synthetic": lambda: [SyntheticSource(n_records=args.records)]}
    if PTBXL.is_dir():
        from ecg_ray.data.sources.ptbxl import PtbxlSource

        inputs["ptbxl-sample"] = lambda: [PtbxlSource(PTBXL)]
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    rates: dict[str, dict[str, float]] = {name: {} for name in inputs}
    try:
        # The pool first, in a process without Ray (as `ecg-ray prepare` runs it): forking a
        # process that holds a Ray connection would slow the pool for no reason of its own.
        for name, make in inputs.items():
            seconds, manifest = _best_time(
                lambda out, make=make: prepare_store(make(), out, workers=args.cpus, progress=False),
                work / f"{name}-pool", args.repeats)
            rates[name]["records"] = manifest["records"] + len(manifest["skipped"])
            rates[name]["pool"] = rates[name]["records"] / seconds
        if args.pool_only:
            for name, rate in rates.items():
                print(f"{name}: {rate['records']:.0f} records; pool {rate['pool']:.0f} records/s")
            print(f"RESULT prepare pool_records_per_s={rates['synthetic']['pool']:.0f}")
            return

        import ray

        from ecg_ray.data.parallel_prepare import prepare_on_ray

        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
        prepare_on_ray([SyntheticSource(n_records=64)], work / "warm", progress=False)  # start Ray's workers
        for name, make in inputs.items():
            seconds, _ = _best_time(lambda out, make=make: prepare_on_ray(make(), out, progress=False)[0],
                                    work / f"{name}-ray", args.repeats)
            rates[name]["ray"] = rates[name]["records"] / seconds
            if _hashes(work / f"{name}-pool") != _hashes(work / f"{name}-ray"):
                raise SystemExit(f"{name}: the Ray store differs from the pool store")
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, rate in rates.items():
        print(f"{name}: {rate['records']:.0f} records; pool {rate['pool']:.0f} records/s, ray {rate['ray']:.0f} "
              f"records/s, ratio {rate['ray'] / rate['pool']:.2f}; stores bit-identical")
    main_rate = rates["synthetic"]
    print(f"RESULT prepare pool_records_per_s={main_rate['pool']:.0f}")
    print(f"RESULT prepare ray_records_per_s={main_rate['ray']:.0f}")
    print(f"RESULT prepare ratio={main_rate['ray'] / main_rate['pool']:.2f}")


if __name__ == "__main__":
    main()
