"""Benchmark: ``prepare wfdb`` on a MIMIC-IV-ECG-sized listing, and its read rate per core.

Run:  .venv/bin/python bench/wfdb_source.py [--records 1000000] [--scan 20000] [--reads 50]

1. **Listing at scale** (no signal files needed: a record list is read without opening records):
   a MIMIC-IV-ECG-like ``record_list.csv`` of ``--records`` rows (subject_id, study_id, file_name,
   ecg_time, path) is turned into references. Reports seconds, driver bytes per record (tracemalloc
   of the kept references, in a second untimed listing) and the pickled size of the source (what each reader process receives).
2. **Scan**: ``--scan`` empty ``.hea`` files in the nested layout, listed by the recursive scan.
3. **Read rate**: the PTB-XL sample's 500 Hz records (``../shared/data``) rewritten in MIMIC's layout
   (format 16, with ``# Age:`` / ``# Sex:`` header comments, parsed into the age and sex columns), each
   read, checked and resampled to 100 Hz by ``WfdbSource.read`` on one core.

Prints ``RESULT wfdb_listing records=.. s=.. bytes_per_record=..``, ``RESULT wfdb_scan ..`` and
``RESULT wfdb_read records_per_s=..`` (one core).
"""

from __future__ import annotations

import argparse
import gc
import pickle
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PTBXL = ROOT.parent / "shared" / "data" / "ptb-xl-sample"


def mimic_path(i: int) -> tuple[int, int, str]:
    subject = 10_000_000 + i // 3  # ~3 studies per subject, as MIMIC-IV-ECG (800k studies, 160k subjects)
    study = 40_000_000 + i
    return subject, study, f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"


def bench_listing(records: int, work: Path) -> None:
    from ecg_ray.data.sources.wfdb_dir import WfdbSource

    rows = [mimic_path(i) for i in range(records)]
    pd.DataFrame({"subject_id": [r[0] for r in rows], "study_id": [r[1] for r in rows],
                  "file_name": [str(r[1]) for r in rows],
                  "ecg_time": ["2180-07-23 09:08:00"] * records, "path": [r[2] for r in rows]},
                 ).to_csv(work / "record_list.csv", index=False)
    del rows
    gc.collect()
    start = time.perf_counter()
    source = WfdbSource(work, record_list=work / "record_list.csv")
    seconds = time.perf_counter() - start
    del source
    gc.collect()
    tracemalloc.start()  # a second listing for the bytes: tracemalloc slows allocation several times
    source = WfdbSource(work, record_list=work / "record_list.csv")
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pickled = len(pickle.dumps(source))
    per_record = kept / records
    print(f"listing {records:,} records: {seconds:.1f} s, references {kept / 1e6:.0f} MB "
          f"({per_record:.0f} B/record, peak {peak / 1e6:.0f} MB while reading the CSV), pickled source {pickled} B")
    print(f"RESULT wfdb_listing records={records} s={seconds:.2f} bytes_per_record={per_record:.0f} "
          f"pickled_source_bytes={pickled}")


def bench_scan(count: int, work: Path) -> None:
    from ecg_ray.data.sources.wfdb_dir import WfdbSource

    root = work / "scan"
    for i in range(count):
        _, study, path = mimic_path(i)
        header = root / (path + ".hea")
        header.parent.mkdir(parents=True, exist_ok=True)
        header.touch()
    start = time.perf_counter()
    refs = WfdbSource(root).refs()
    seconds = time.perf_counter() - start
    print(f"scan of {count:,} .hea files in {count // 3:,} patient directories: {seconds:.2f} s "
          f"({count / seconds:,.0f} files/s)")
    print(f"RESULT wfdb_scan files={len(refs)} s={seconds:.2f} files_per_s={count / seconds:.0f}")


def bench_reads(reads: int, work: Path) -> None:
    import wfdb

    from ecg_ray.data.sources.wfdb_dir import WfdbSource

    root = work / "mimic"
    available = sorted(PTBXL.glob("records500/*/*_hr.hea"))[:reads]
    if not available:
        print(f"read rate skipped: no PTB-XL 500 Hz records under {PTBXL}")
        return
    for i, header in enumerate(available):
        source = wfdb.rdrecord(str(header.with_suffix("")), physical=False)
        _, study, path = mimic_path(i)
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        wfdb.wrsamp(str(study), fs=source.fs, units=source.units, sig_name=source.sig_name,
                    d_signal=source.d_signal, fmt=["16"] * 12, adc_gain=source.adc_gain,
                    baseline=source.baseline, write_dir=str((root / path).parent),
                    comments=[f"Age: {40 + i % 50}", f"Sex: {('Male', 'Female')[i % 2]}"])
    source = WfdbSource(root, fs_out=100.0)
    refs = source.refs()
    for ref in refs[:3]:
        source.read(ref)  # warm imports and the page cache
    rounds = 4
    start = time.perf_counter()
    for _ in range(rounds):
        for ref in refs:
            source.read(ref)
    seconds = time.perf_counter() - start
    rate = rounds * len(refs) / seconds
    first = source.read(refs[0])
    lengths = {first.signal.shape}
    if (first.metadata["age"], first.metadata["sex"]) != (40.0, 0):
        raise SystemExit(f"header age/sex not read: {first.metadata}")
    print(f"read {rounds} x {len(refs)} records (500 Hz, 10 s, format 16 -> 100 Hz {lengths}): "
          f"{rate:.0f} records/s on one core")
    print(f"RESULT wfdb_read records_per_s={rate:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--scan", type=int, default=20_000)
    parser.add_argument("--reads", type=int, default=50)
    args = parser.parse_args()
    np.seterr(all="ignore")
    with tempfile.TemporaryDirectory(prefix="wfdb-bench-") as tmp:
        work = Path(tmp)
        bench_reads(args.reads, work)
        if args.scan:
            bench_scan(args.scan, work)
        bench_listing(args.records, work)


if __name__ == "__main__":
    main()
