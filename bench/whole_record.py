"""Benchmark: one trained model scored on the PTB-XL sample's test fold with sliding windows and whole records.

Run:  .venv/bin/python bench/whole_record.py [--store STORE] [--config jobs/smoke/eval-supervised.yaml]
          [--epochs 3] [--repeats 3] [--out DIR] [--set KEY=VALUE ...]

1. ``ecg-ray evaluate --mode supervised`` (the config's encoder from random initialisation, xresnet1d50 by
   default; the CLI in a subprocess, as a user runs it) trains on 2.5 s crops of folds 1-8, selects the
   epoch on fold 9 with sliding windows and writes its checkpoint.
2. In this process the selected model is loaded from that checkpoint and the test fold (10) is scored
   twice with the same weights: sliding windows (``data.window: 250``, ``stride: 125``; 7 windows of a
   10 s record, outputs averaged) and whole records (``data.window: 0``; one 10 s window per record),
   each timed ``--repeats`` times (median; reading the records from the store included).

A comparison of windowing on one model, not a quality claim: the sample has 66 test records and the
model is trained for a few epochs. Prints ``RESULT whole_record_sliding test_macro_auc=.. ci=..
s=..``, ``RESULT whole_record_whole ...`` and last ``RESULT whole_record ratio=.. auc_diff=..``: ratio =
whole-record inference time / sliding-window inference time, auc_diff = whole - sliding test macro
AUC (ours). Writes ``OUT/whole_record.json`` with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import quality_sample  # noqa: E402  (one CLI runner for the benchmarks that drive ecg-ray)
from quality_sample import SAMPLE  # noqa: E402


def run_cli(args: list[str], log: Path) -> dict:
    """``ecg-ray ARGS --json`` (quality_sample's runner: this checkout first on PYTHONPATH); exits on failure."""
    try:
        return quality_sample.run_cli(args, log)
    except RuntimeError as exc:
        sys.exit(str(exc))


def timed(fn, repeats: int):
    """(the last result, median seconds) of ``repeats`` calls."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def score_both(run: dict, store_path: str, repeats: int, bootstrap: int) -> dict:
    """Sliding windows and whole records on the run's test fold, with the run's selected weights."""
    import numpy as np
    import torch

    from ecg_ray.config import Config, from_dict
    from ecg_ray.data.store import EcgStore
    from ecg_ray.evaluation.scoring import predict_records, score
    from ecg_ray.train.checkpoint import load_state
    from ecg_ray.train.classifier import build_classifier
    from ecg_ray.train.downstream import predict_whole_records, splits

    state = load_state(run["checkpoint"])
    config = from_dict(Config, state["config"])
    store = EcgStore(store_path)
    label_set = config.data.label_set
    model = build_classifier(config, len(store.manifest["label_sets"][label_set]))
    model.load_state_dict(state["model"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    _, _, test = splits(config, store)
    window, stride = config.data.window or 250, config.data.stride
    ways = {
        "sliding": lambda: predict_records(model, store, test, window=window, stride=stride, device=device),
        "whole": lambda: predict_whole_records(model, store, test, min_length=config.data.crop, device=device),
    }
    out = {"device": str(device), "encoder": config.model.encoder, "test_records": int(len(test)),
           "window": window, "stride": stride, "torch_threads": torch.get_num_threads()}
    for name, predict in ways.items():
        predict()  # warm-up: first-call allocations and kernel selection are not windowing
        (records, probs), seconds = timed(predict, repeats)
        result = score(store, records, probs, label_set, bootstrap=bootstrap, seed=0)
        lengths = store.column("length")[records]
        windows = int(np.sum((lengths - window) // stride + 1)) if name == "sliding" else len(records)
        out[name] = {"test_macro_auc": result["macro_auc"], "ci": result.get("ci"),
                     "test_macro_auc_reference": result["macro_auc_reference"], "records": int(len(records)),
                     "windows": windows, "s": seconds, "ms_per_record": 1000 * seconds / max(1, len(records))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=None, help="a prepared PTB-XL store (default: prepare the sample)")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="the PTB-XL sample (when --store is not given)")
    parser.add_argument("--config", default="jobs/smoke/eval-supervised.yaml", help="the supervised job file")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed scorings per windowing (median)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the CIs")
    parser.add_argument("--out", type=Path, default=None, help="keep runs and figures here (default: a temp dir)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        store = args.store
        if store is None:
            if not (args.sample / "ptbxl_database.csv").exists():
                sys.exit(f"the PTB-XL sample is not at {args.sample}; pass --sample or --store")
            store = str(out / "ptbxl")
            if not Path(store).exists():
                run_cli(["prepare", "ptbxl", str(args.sample), "--out", store, "--no-progress"], out / "prepare.log")
        command = ["evaluate", "--mode", "supervised", "--store", store, "--config", args.config,
                   "--epochs", str(args.epochs), "--output", str(out / "runs"),
                   "--set", "data.window=250", "--set", "data.stride=125"]
        for item in args.set:
            command += ["--set", item]
        start = time.perf_counter()
        run = run_cli(command, out / "evaluate.log")
        train_s = time.perf_counter() - start
        figures = score_both(run, store, args.repeats, args.bootstrap)
        figures.update({"command": "ecg-ray " + " ".join(command), "train_command_s": train_s,
                        "run_dir": run["run_dir"], "epochs": args.epochs, "repeats": args.repeats})
        (out / "whole_record.json").write_text(json.dumps(figures, indent=1))
    for name in ("sliding", "whole"):
        f = figures[name]
        ci = f"[{f['ci'][0]:.3f},{f['ci'][1]:.3f}]" if f["ci"] else "none"
        print(f"RESULT whole_record_{name} test_macro_auc={f['test_macro_auc']:.4f} ci={ci} "
              f"reference={f['test_macro_auc_reference']:.4f} records={f['records']} windows={f['windows']} "
              f"s={f['s']:.3f} ms_per_record={f['ms_per_record']:.2f}")
    ratio = figures["whole"]["s"] / figures["sliding"]["s"]
    diff = figures["whole"]["test_macro_auc"] - figures["sliding"]["test_macro_auc"]
    print(f"RESULT whole_record ratio={ratio:.3f} auc_diff={diff:+.4f} device={figures['device']} "
          f"encoder={figures['encoder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
