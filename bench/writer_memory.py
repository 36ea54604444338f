"""Benchmark: what a prepare's writer holds per record until its tables are written (issue #12).

Run:  .venv/bin/python bench/writer_memory.py [--records 1000000]

``StoreWriter`` keeps every accepted record's row and label names until ``finalize``. This builds
N rows shaped like MIMIC-IV-ECG's (id, dataset, a 60-character file path, offset, length, rate,
subject_id, study_id, an ecg_time string, patient_id, fold, age, sex) with 1-4 label names each, and
measures, each in a fresh process, the growth of private resident memory (``RssAnon``) and the
time to append them:

- **baseline**: what the writer kept before: a list of row dicts and a list of label dicts;
- **ours**: ``ecg_ray.data.record_rows.RecordRows`` (typed column blocks, label ids in one array).

Then ours builds the records table and label matrix (``finalize``'s work) and checks it equals the
baseline's ``pd.DataFrame(rows)``. Prints ``RESULT writer_memory bytes_per_record=`` (ours),
``RESULT writer_memory baseline_bytes_per_record=`` and ``RESULT writer_memory ratio=`` (ours / baseline).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ["NORM", "AFIB", "STACH", "SBRAD", "LVH", "IRBBB", "1AVB", "PVC", "super:NORM", "super:CD"]


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise KeyError("RssAnon")


def make_row(i: int) -> tuple[dict, list[str]]:
    subject, study = 10_000_000 + i // 3, 40_000_000 + i
    row = {"id": str(study), "dataset": "mimic-iv-ecg",
           "file": f"files/p{subject // 100_000:04d}/p{subject}/s{study}/{study}.hea",
           "offset": i * 1000, "length": 1000, "fs_original": 500.0,
           "subject_id": subject, "study_id": study, "ecg_time": f"2180-07-{1 + i % 28:02d} 11:{i % 60:02d}:00",
           "patient_id": str(subject), "fold": 1 + i % 10, "age": float(18 + i % 70), "sex": "F" if i % 2 else "M"}
    labels = [LABELS[(i * k) % len(LABELS)] for k in range(1 + i % 4)]
    return row, list(dict.fromkeys(labels))


def measure(kind: str, n: int) -> dict:
    import pandas as pd

    from ecg_ray.data.record_rows import RecordRows

    gc.collect()
    before = rss_anon()
    started = time.perf_counter()
    if kind == "baseline":
        rows, label_sets = [], []
        for i in range(n):
            row, labels = make_row(i)
            rows.append(row)
            label_sets.append(dict.fromkeys(labels, 1))
    else:
        table = RecordRows()
        for i in range(n):
            table.append(*make_row(i))
    append_s = time.perf_counter() - started
    gc.collect()
    held = rss_anon() - before
    result = {"kind": kind, "records": n, "bytes_per_record": held / n, "append_us_per_record": 1e6 * append_s / n}
    if kind == "ours":
        started = time.perf_counter()
        frame = table.frame()
        table.label_matrix(sorted(table.label_names()))
        result["finalize_s"] = time.perf_counter() - started
        check = min(n, 200_000)  # the baseline frame of the first rows, built here for the equality check
        expected = pd.DataFrame([make_row(i)[0] for i in range(check)])
        pd.testing.assert_frame_equal(frame.iloc[:check], expected, check_exact=True)
        result["equal_to_baseline_frame"] = True
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.records)))
        return
    results = {}
    for kind in ("baseline", "ours"):
        proc = subprocess.run([sys.executable, __file__, "--records", str(args.records), "--child", kind],
                              capture_output=True, text=True, check=True)
        results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(results[kind]))
    ours, base = results["ours"], results["baseline"]
    print(f"RESULT writer_memory bytes_per_record={ours['bytes_per_record']:.0f}")
    print(f"RESULT writer_memory baseline_bytes_per_record={base['bytes_per_record']:.0f}")
    print(f"RESULT writer_memory ratio={ours['bytes_per_record'] / base['bytes_per_record']:.3f}")
    print(f"RESULT writer_memory append_ratio={ours['append_us_per_record'] / base['append_us_per_record']:.2f}")


if __name__ == "__main__":
    main()
