"""``make demo``: the main job on embedded synthetic data, no download needed.

Steps: prepare a labelled synthetic 12-lead store, stream random 2.5 s crops through Ray Data,
pretrain SimCLR for a few epochs on a local Ray cluster (2 Ray Train workers, an online linear
probe on the validation fold each epoch), export the encoder, evaluate it with the paper's linear
protocol against the same linear head on a random-init encoder, and write a report.

Usage: python -m ecg_ray.demo [--out demo_out] [--records 2000] [--epochs 3]

The demo starts fresh by deleting its previous runs, evaluations and report, so it first makes
sure ``--out`` is its own directory: new or empty, or marked by an earlier demo, or laid out
exactly as a demo leaves it (directories of older versions carry no mark). Everything it would
delete must then be an ecg_ray run directory or a report file; anything else stops the demo with
a one-line message and nothing deleted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ecg_ray.cli import main as cli_main
from ecg_ray.errors import EcgRayError

ROOT = Path(__file__).resolve().parents[1]
#: written into --out by the demo: the directory is the demo's to clean up
DEMO_MARK = ".ecg_ray-demo"
#: what the demo writes into --out; the first three are deleted at the start of each demo
RUN_FOLDERS = ("runs", "evaluations")
REPORT_FOLDER = "report"
DEMO_OUTPUTS = (*RUN_FOLDERS, REPORT_FOLDER, "synthetic.zarr", "encoder.pt", DEMO_MARK)


def _foreign_entry(out: Path) -> str | None:
    """The first thing in ``out`` the demo would delete but did not write, or None."""
    from ecg_ray.train.trainer import RUN_CONFIG

    for folder in RUN_FOLDERS:
        if (out / folder).exists():
            if not (out / folder).is_dir():
                return str(out / folder)
            for run in sorted((out / folder).iterdir()):
                if not (run.is_dir() and (run / RUN_CONFIG).is_file()):  # every ecg_ray run writes it first
                    return f"{run} (not an ecg_ray run directory)"
    report = out / REPORT_FOLDER
    if report.exists():
        if not report.is_dir():
            return str(report)
        for item in sorted(report.iterdir()):
            # report.md, its plots, and the temporary file of an interrupted report
            if not (item.is_file() and (item.suffix in (".md", ".png") or item.name.startswith(".report.md.tmp-"))):
                return f"{item} (not a file of an ecg_ray report)"
    return None


def claim_output_dir(out: Path) -> None:
    """Make sure ``out`` is the demo's own directory before anything in it is deleted; mark it."""
    if out.exists() and not out.is_dir():
        raise EcgRayError(f"demo --out {out} is a file; give a directory")
    if out.is_dir() and not (out / DEMO_MARK).exists() and any(out.iterdir()):
        others = sorted(p.name for p in out.iterdir() if p.name not in DEMO_OUTPUTS)
        if others or not (out / "synthetic.zarr").is_dir():
            shown = ", ".join(others[:3]) or "no synthetic.zarr"
            raise EcgRayError(f"refusing to use {out} for the demo: it is not a demo output directory "
                              f"({shown}); choose another --out")
    foreign = _foreign_entry(out)
    if foreign is not None:
        raise EcgRayError(f"refusing to clean {out} for the demo: {foreign} was not written by it; "
                          "move it away or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text("written by python -m ecg_ray.demo: this directory holds its outputs\n")


def _cli_json(args: list[str]) -> dict:
    """Run a CLI verb with --json and return its summary (last stdout line)."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli_main([*args, "--json"])
    lines = buffer.getvalue().strip().splitlines()
    print("\n".join(lines[:-1]))
    if code:
        raise SystemExit(code)
    return json.loads(lines[-1])


def run(out: Path, records: int, epochs: int) -> int:
    import shutil

    start = time.perf_counter()
    claim_output_dir(out)
    for owned in (*RUN_FOLDERS, REPORT_FOLDER):  # the demo's own outputs: start fresh each time
        shutil.rmtree(out / owned, ignore_errors=True)
    store = out / "synthetic.zarr"
    print(f"[demo] 1/6 prepare {records} synthetic 12-lead records -> {store}")
    code = cli_main(["prepare", "synthetic", "--out", str(store), "--records", str(records), "--overwrite",
                     "--no-progress"])
    if code:
        return code

    import ray
    from ray.data import DataContext

    from ecg_ray.data.store import EcgStore
    from ecg_ray.data.stream import select_records, train_crops

    ray.init(num_cpus=2, object_store_memory=500_000_000, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    DataContext.get_current().enable_progress_bars = False
    try:
        print("[demo] 2/6 stream one epoch of random 2.5 s crops through Ray Data")
        opened = EcgStore(store)
        train = select_records(opened, folds=range(1, 9))
        dataset, info = train_crops(opened, train, crop=250, seed=0, epoch=0, with_labels=True)
        t0, n, shape = time.perf_counter(), 0, None
        for batch in dataset.iter_torch_batches(batch_size=256):
            n += batch["signal"].shape[0]
            shape = shape or tuple(batch["signal"].shape)
        print(f"[demo]     {n} crops of {info.records} training records (folds 1-8) in "
              f"{time.perf_counter() - t0:.1f} s; batch shape {shape}")

        print(f"[demo] 3/6 pretrain SimCLR for {epochs} epochs on 2 Ray Train workers")
        summary = _cli_json(["pretrain", "--config", str(ROOT / "jobs" / "smoke" / "simclr.yaml"),
                             "--store", str(store), "--epochs", str(epochs), "--workers", "2",
                             "--set", "train.batch_size=128", "--set", "train.probe_max_records=400",
                             "--output", str(out / "runs")])
        print(f"[demo]     loss per epoch {[round(v, 3) for v in summary['loss']]}, "
              f"online linear probe val macro AUC {summary['val_macro_auc']:.3f}")

        print("[demo] 4/6 export the encoder")
        exported = _cli_json(["export", summary["run_dir"], "--out", str(out / "encoder.pt")])

        print("[demo] 5/6 linear evaluation: SimCLR encoder vs random-init encoder (folds 1-8 / 9 / 10)")
        linear = ROOT / "jobs" / "smoke" / "eval-linear.yaml"
        results = {}
        for name, extra in (("simclr linear", ["--encoder", exported["out"]]), ("random init linear", [])):
            results[name] = _cli_json(["evaluate", "--mode", "linear", "--config", str(linear), "--store", str(store),
                                       *extra, "--set", f"eval.variant={name}", "--set", "train.batch_size=128",
                                       "--epochs", str(epochs), "--output", str(out / "evaluations")])
    finally:
        ray.shutdown()
    print("[demo] 6/6 report")
    from ecg_ray.report import write_report

    report = write_report(out)
    print()
    for name, result in results.items():
        low, high = result["test_macro_auc_ci"]
        print(f"[demo] {name:<20} test macro AUC {result['test_macro_auc']:.3f} [{low:.3f}, {high:.3f}]")
    print(f"[demo] done in {time.perf_counter() - start:.0f} s. Report: {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        return run(args.out, args.records, args.epochs)
    except EcgRayError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
