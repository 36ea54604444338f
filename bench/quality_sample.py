"""Benchmark: every pretraining + evaluation row of issue #14, end to end on the PTB-XL sample.

Run:  .venv/bin/python bench/quality_sample.py [--encoders xresnet1d50,cpc_4fc2lstm,cpc_s4] [--seeds 3]
          [--epochs 20] [--eval-epochs 20] [--out runs/quality_sample] [--jobs 1] [--smoke]

For each encoder, with the SAME budget (pretraining epochs = full passes over folds 1-8, downstream
epochs, workers, store) and for each seed, as a user would run them (the ``ecg-ray`` CLI in a
subprocess with ``--json``, one Ray instance per command, or the cluster in RAY_ADDRESS if set):

- ``ecg-ray pretrain`` with the encoder's smoke job (xresnet1d50: SimCLR ``jobs/smoke/simclr.yaml``;
  cpc_4fc2lstm: CPC ``jobs/smoke/cpc.yaml``; cpc_s4: CPC ``jobs/smoke/cpc-s4.yaml``), then ``ecg-ray export``
  (the latest epoch, the same rule for every encoder);
- ``ecg-ray evaluate`` with the paper's downstream jobs (``jobs/paper/eval-*.yaml`` for xresnet1d50,
  ``jobs/paper/cpc-*.yaml`` and ``eval-supervised-cpc.yaml`` for both CPC backbones, whose downstream
  features are pooled the same way): ``linear`` and ``finetune`` from the exported encoder, plus
  ``supervised`` and ``random_linear`` from random initialisation (the baselines each pretrained row
  must beat). Folds 1-8 train, 9 validation (model selection), 10 test, the 71 "all" statements.

The sample is far too small to rank methods (66 test records, 31 of 71 labels scorable); the point is
that every row runs and that the numbers are sane: supervised well above random-init linear.

Reports both macro AUC scales of ``evaluation.json``: ``test_macro_auc`` (labels the test fold can
score) and ``test_macro_auc_reference`` (every label, an unscorable one counted as 0.5, as the
reference code and the published tables), each as mean, standard deviation and per-seed values.
Writes ``OUT/quality_sample.md`` (the table), ``OUT/quality_sample.json`` (every command's figures),
``OUT/runs/`` (the run directories, readable by ``ecg-ray report``) and ``OUT/logs/`` (each
command's output), and prints ``RESULT quality_sample_<encoder>_<row> test_macro_auc=.. std=..
reference=.. reference_std=.. seeds=..`` per row and ``RESULT quality_sample_<encoder>
supervised_minus_random_linear=.. reference=..`` per encoder (the sanity check of issue #14).
Exit status 1 if any command failed (the table names it and the rows it left out).

``--smoke`` is a budget for tests: 1 seed, 1 epoch of 1 step everywhere, no bootstrap. Its 18 commands
take ~30-60 s each on 2 cores however small the budget (Ray start-up, Ray Train set-up, validation and
test inference over the windows of folds 9 and 10): 11.4 min with the full test suite running beside it
(8.9 min with ``--jobs 3``). Cost of the default budget, from per-epoch rates measured on 2 busy cores
(load 8-20): per seed ~6 min for xresnet1d50, ~55 min for cpc_4fc2lstm and ~45 min for cpc_s4 (the CPC
networks run ~5-10 samples/s on a CPU), so ~5 h for 3 seeds there and roughly half that on idle
cores; with a GPU (``--gpus-per-worker 1``) the per-command overhead dominates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "ptb-xl-sample"
ROWS = ("linear", "finetune", "supervised", "random_linear")
ROW_TITLES = {"linear": "linear (pretrained, frozen)", "finetune": "fine-tune (pretrained)",
              "supervised": "supervised (random init)", "random_linear": "linear (random init, frozen)"}


@dataclass(frozen=True)
class EncoderPlan:
    """Which job files one encoder's rows run: its pretraining and its paper downstream jobs."""

    method: str
    pretrain: str
    linear: str
    finetune: str
    supervised: str
    #: the published fine-tuning's head-only share of its epochs (cpc-finetune.yaml: 50 of 70), kept at any budget
    head_only_share: float = 0.0


CPC_EVAL = {"linear": "jobs/paper/cpc-linear.yaml", "finetune": "jobs/paper/cpc-finetune.yaml",
            "supervised": "jobs/paper/eval-supervised-cpc.yaml", "head_only_share": 50 / 70}
PLANS = {
    "xresnet1d50": EncoderPlan("SimCLR", "jobs/smoke/simclr.yaml", "jobs/paper/eval-linear.yaml",
                               "jobs/paper/eval-finetune.yaml", "jobs/paper/eval-supervised.yaml"),
    "cpc_4fc2lstm": EncoderPlan("CPC", "jobs/smoke/cpc.yaml", **CPC_EVAL),
    "cpc_s4": EncoderPlan("CPC", "jobs/smoke/cpc-s4.yaml", **CPC_EVAL),
}


def ecg_ray_command() -> list[str]:
    """The ``ecg-ray`` entry point of this interpreter's environment (as a user's shell finds it)."""
    beside = Path(sys.executable).parent / "ecg-ray"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ecg-ray")
    if found is None:
        sys.exit("ecg-ray not found beside this Python or on PATH: pip install -e . first")
    return [found]


def child_env() -> dict:
    # This checkout's ecg_ray first, so that the benchmark measures the code it sits in (a worktree
    # beside an editable install of another checkout); Ray workers inherit PYTHONPATH.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_cli(args: list[str], log: Path) -> dict:
    """``ecg-ray ARGS --json``: its JSON summary, or an error naming the command's last stderr line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run([*ecg_ray_command(), *args, "--json"], capture_output=True, text=True,
                          cwd=ROOT, env=child_env(), check=False)
    seconds = time.perf_counter() - start
    log.write_text(f"$ ecg-ray {' '.join(args)} --json\n# exit {done.returncode}, {seconds:.1f} s\n"
                   f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"ecg-ray {args[0]} exited {done.returncode}: {lines[-1] if lines else 'no message'}"
                           f" (log: {log})")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["command_s"] = seconds
    return summary


def budget_overrides(args, seed: int, epochs: int) -> list[str]:
    """The settings every command of one seed shares: the budget, the seed, CPU or GPU workers."""
    flags = [f"seed={seed}", f"train.epochs={epochs}", f"train.workers={args.workers}",
             f"train.gpus_per_worker={args.gpus_per_worker}"]
    # null: every epoch is one full pass over folds 1-8 for every encoder (the smoke jobs cap CPC at 3 steps)
    flags.append(f"train.max_steps_per_epoch={args.max_steps if args.max_steps else 'null'}")
    return [item for flag in flags for item in ("--set", flag)]


def eval_args(args, plan: EncoderPlan, encoder: str, row: str, seed: int, store: str) -> list[str]:
    job = {"linear": plan.linear, "random_linear": plan.linear, "finetune": plan.finetune,
           "supervised": plan.supervised}[row]
    command = ["evaluate", "--config", str(ROOT / job), "--store", store,
               "--output", str(args.out / "runs" / encoder / f"seed{seed}" / row),
               *budget_overrides(args, seed, args.eval_epochs),
               "--set", f"model.encoder={encoder}", "--set", f"eval.bootstrap={args.bootstrap}"]
    if row == "finetune" and plan.head_only_share:
        head_only = min(args.eval_epochs - 1, round(args.eval_epochs * plan.head_only_share))
        command += ["--set", f"eval.head_only_epochs={head_only}"]
    return command


def pretrain_and_export(args, plan: EncoderPlan, encoder: str, seed: int, store: str) -> dict:
    logs = args.out / "logs" / encoder / f"seed{seed}"
    pretrained = run_cli(["pretrain", "--config", str(ROOT / plan.pretrain), "--store", store,
                          "--output", str(args.out / "runs" / encoder / f"seed{seed}" / "pretrain"),
                          *budget_overrides(args, seed, args.epochs), "--set", f"model.encoder={encoder}"],
                         logs / "pretrain.log")
    file = args.out / "encoders" / f"{encoder}-seed{seed}.pt"
    file.parent.mkdir(parents=True, exist_ok=True)
    exported = run_cli(["export", pretrained["run_dir"], "--out", str(file)], logs / "export.log")
    return {"run_dir": pretrained["run_dir"], "loss": pretrained.get("loss"), "encoder_file": str(file),
            "epoch": exported.get("epoch"), "command_s": pretrained["command_s"] + exported["command_s"]}


def evaluate_row(args, plan: EncoderPlan, encoder: str, row: str, seed: int, store: str,
                 encoder_file: str | None) -> dict:
    command = eval_args(args, plan, encoder, row, seed, store)
    if encoder_file is not None:
        command += ["--encoder", encoder_file]
    summary = run_cli(command, args.out / "logs" / encoder / f"seed{seed}" / f"{row}.log")
    keys = ("test_macro_auc", "test_macro_auc_reference", "val_macro_auc", "best_epoch", "labels_scored",
            "run_dir", "command_s")
    return {key: summary.get(key) for key in keys}


def encoder_seed(args, encoder: str, seed: int, store: str) -> dict:
    """One encoder and seed: the two baselines, then pretraining, export and the two pretrained rows."""
    plan = PLANS[encoder]
    figures = {"encoder": encoder, "seed": seed, "rows": {}, "errors": {}}

    def attempt(row: str, work) -> None:
        try:
            figures["rows"][row] = work()
        except (RuntimeError, ValueError) as exc:  # ValueError: a summary that is not JSON
            figures["errors"][row] = str(exc)

    for row in ("supervised", "random_linear"):
        attempt(row, lambda row=row: evaluate_row(args, plan, encoder, row, seed, store, None))
    attempt("pretrain", lambda: pretrain_and_export(args, plan, encoder, seed, store))
    pretrained = figures["rows"].get("pretrain")
    for row in ("linear", "finetune"):
        if pretrained is None:
            figures["errors"][row] = "not run: pretraining or export failed"
        else:
            attempt(row, lambda row=row: evaluate_row(args, plan, encoder, row, seed, store,
                                                      pretrained["encoder_file"]))
    return figures


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one seed) and the values, non-finite ones left out."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {"mean": statistics.fmean(finite) if finite else None,
            "std": statistics.stdev(finite) if len(finite) > 1 else None, "values": finite}


def summarise(runs: list[dict], encoders: list[str]) -> dict:
    """Per encoder and row: both AUC scales over the seeds; per encoder: supervised - random-init linear."""
    table = {}
    for encoder in encoders:
        mine = sorted((r for r in runs if r["encoder"] == encoder), key=lambda r: r["seed"])
        rows = {}
        for row in ROWS:
            done = [r["rows"][row] for r in mine if row in r["rows"]]
            rows[row] = {"seeds": [r["seed"] for r in mine if row in r["rows"]],
                         "auc": spread([d["test_macro_auc"] for d in done]),
                         "reference": spread([d["test_macro_auc_reference"] for d in done]),
                         "errors": {r["seed"]: r["errors"][row] for r in mine if row in r["errors"]}}
        gap = {scale: (rows["supervised"][scale]["mean"] - rows["random_linear"][scale]["mean"]
                       if rows["supervised"][scale]["mean"] is not None
                       and rows["random_linear"][scale]["mean"] is not None else None)
               for scale in ("auc", "reference")}
        table[encoder] = {"method": PLANS[encoder].method, "rows": rows, "supervised_minus_random_linear": gap,
                          "pretrain_errors": {r["seed"]: r["errors"]["pretrain"] for r in mine
                                              if "pretrain" in r["errors"]}}
    return table


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def fmt_spread(stats: dict) -> str:
    if stats["mean"] is None:
        return "-"
    text = fmt(stats["mean"]) + ("" if stats["std"] is None else f" ± {stats['std']:.3f}")
    return f"{text} ({', '.join(f'{v:.3f}' for v in stats['values'])})"


def markdown(table: dict, args, seconds: float) -> str:
    budget = (f"pretraining {args.epochs} epoch(s), downstream {args.eval_epochs} epoch(s)"
              + (f", at most {args.max_steps} step(s) per epoch" if args.max_steps else ", full passes over folds 1-8")
              + f", {args.workers} worker(s), seeds {', '.join(map(str, args.seed_list))}")
    lines = ["# Quality on the PTB-XL sample (bench/quality_sample.py)", "",
             f"Budget: {budget}. Folds 1-8 train / 9 validation / 10 test, 71 \"all\" statements; "
             f"{seconds / 60:.1f} min in all. Test macro AUC: mean ± sample std (per-seed values); "
             "`reference`: every label, an unscorable one counted as 0.5 (the published tables' scale). "
             "The sample is too small to rank methods; the check is that each row runs and that supervised "
             "is well above random-init linear.", "",
             "| encoder | pretraining | row | test macro AUC | reference scale | failed |", "|---|---|---|---|---|---|"]
    for encoder, entry in table.items():
        for row in ROWS:
            stats = entry["rows"][row]
            pretraining = entry["method"] if row in ("linear", "finetune") else "none"
            errors = "; ".join(f"seed {s}: {e}" for s, e in stats["errors"].items())
            lines.append(f"| {encoder} | {pretraining} | {ROW_TITLES[row]} | {fmt_spread(stats['auc'])} | "
                         f"{fmt_spread(stats['reference'])} | {errors or '-'} |")
    lines += ["", "| encoder | supervised - random-init linear | reference scale | pretraining failed |",
              "|---|---|---|---|"]
    for encoder, entry in table.items():
        gap, errors = entry["supervised_minus_random_linear"], entry["pretrain_errors"]
        lines.append(f"| {encoder} | {fmt(gap['auc'])} | {fmt(gap['reference'])} | "
                     f"{'; '.join(f'seed {s}: {e}' for s, e in errors.items()) or '-'} |")
    return "\n".join(lines) + "\n"


def result_lines(table: dict) -> list[str]:
    def number(value: float | None) -> str:
        return "nan" if value is None else f"{value:.4f}"  # std of one seed, or no finite value

    lines = []
    for encoder, entry in table.items():
        for row in ROWS:
            auc, ref = entry["rows"][row]["auc"], entry["rows"][row]["reference"]
            if auc["values"] or ref["values"]:
                lines.append(f"RESULT quality_sample_{encoder}_{row} test_macro_auc={number(auc['mean'])} "
                             f"std={number(auc['std'])} reference={number(ref['mean'])} "
                             f"reference_std={number(ref['std'])} seeds={len(entry['rows'][row]['seeds'])}")
        gap = entry["supervised_minus_random_linear"]
        if gap["auc"] is not None or gap["reference"] is not None:
            lines.append(f"RESULT quality_sample_{encoder} supervised_minus_random_linear={number(gap['auc'])} "
                         f"reference={number(gap['reference'])}")
    return lines


def prepare_sample(sample: Path, tmp: Path) -> str:
    if not (sample / "ptbxl_database.csv").exists():
        sys.exit(f"the PTB-XL sample is not at {sample} (see ../shared/data/README.md); pass --sample or --store")
    store = tmp / "ptbxl"
    run_cli(["prepare", "ptbxl", str(sample), "--out", str(store), "--no-progress"], tmp / "prepare.log")
    return str(store)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", default=",".join(PLANS), help=f"comma-separated, of {', '.join(PLANS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (each: its own pretraining)")
    parser.add_argument("--epochs", type=int, default=20, help="pretraining epochs, the same for every encoder")
    parser.add_argument("--eval-epochs", type=int, default=20, help="downstream epochs, the same for every row")
    parser.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch (0: full passes)")
    parser.add_argument("--workers", type=int, default=1, help="training workers per command")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (0: CPU)")
    parser.add_argument("--bootstrap", type=int, default=0,
                        help="bootstrap resamples per evaluation (0: none; the seeds give the spread)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="encoder-seed chains run at once (each command starts its own Ray instance)")
    parser.add_argument("--store", default=None, help="a prepared PTB-XL store (default: prepare the sample)")
    parser.add_argument("--sample", type=Path, default=SAMPLE, help="the PTB-XL sample (or full PTB-XL) directory")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "quality_sample")
    parser.add_argument("--smoke", action="store_true", help="1 seed, 1 epoch of 1 step everywhere (for tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.epochs, args.eval_epochs, args.max_steps, args.bootstrap = 1, 1, 1, 1, 0
    args.encoder_list = [e for e in args.encoders.replace(" ", "").split(",") if e]
    unknown = [e for e in args.encoder_list if e not in PLANS]
    if unknown or not args.encoder_list:
        parser.error(f"--encoders: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(PLANS)}")
    if min(args.seeds, args.epochs, args.eval_epochs, args.workers, args.jobs) < 1:
        parser.error("--seeds, --epochs, --eval-epochs, --workers and --jobs must be >= 1")
    args.seed_list = list(range(args.seeds))
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ecg_ray-quality-"))
    try:
        store = args.store or prepare_sample(args.sample, tmp)
        chains = [(encoder, seed) for seed in args.seed_list for encoder in args.encoder_list]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            runs = list(pool.map(lambda chain: encoder_seed(args, *chain, store), chains))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    table = summarise(runs, args.encoder_list)
    report = markdown(table, args, seconds)
    (args.out / "quality_sample.md").write_text(report)
    (args.out / "quality_sample.json").write_text(json.dumps(
        {"budget": {k: getattr(args, k) for k in ("epochs", "eval_epochs", "max_steps", "workers", "seed_list")},
         "seconds": seconds, "table": table, "runs": runs}, indent=1, default=str))
    print(report)
    for line in result_lines(table):
        print(line)
    failed = sum(len(r["errors"]) for r in runs)
    print(f"{len(runs)} encoder-seed chain(s), {failed} failed command(s), {seconds / 60:.1f} min; "
          f"table {args.out / 'quality_sample.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
