"""Benchmark: the paper's three xresnet1d50 rows (supervised, random-init linear, SimCLR linear) on the PTB-XL sample.

Run:  .venv/bin/python bench/fidelity.py [--seeds 0,1,2] [--ssl-minutes 10] [--out results.json] [--quick]

A fidelity check of the whole path (store -> Ray Train -> downstream evaluation), not a reproduction
of the published numbers: the PTB-XL sample holds 500 records (folds 1-8: ~350 for training, fold 9:
~80 for model selection, fold 10: ~65 for the test), so the absolute AUCs sit below the paper's
(0.924 / 0.721 / 0.883); the ordering of the rows is the claim to watch. Takes ~40 minutes on
2 CPU cores (~30 without the diagnostic rows); not part of ``make test``.

1. The sample is prepared into a temporary store at 100 Hz.
2. Supervised row: ``jobs/paper/eval-supervised.yaml`` (xresnet1d50, 50 epochs, batch 128), one run
   per seed.
3. Random-init linear row: ``jobs/paper/eval-linear.yaml`` without an encoder, one run per seed.
4. SSL row: SimCLR with the ``jobs/pretrain/simclr.yaml`` settings, on folds 1-8 with the online
   probe on fold 9 (fold 10 is never seen), a CPU-sized batch (``--ssl-batch``, default 176) and a
   warm-up of 10 % of the run. A 2-epoch pretraining is timed first; the epoch count that fills
   ``--ssl-minutes`` follows from it and a second pretraining runs from scratch with that count
   (the cosine schedule depends on the total, so the timing run cannot simply be extended). The
   encoder of its last epoch (``--ssl-export best``: of its best epoch by the online-probe macro AUC)
   is exported and evaluated with ``jobs/paper/eval-linear.yaml`` for every seed: one pretraining
   (seed 0) feeds all linear seeds.

Every job keeps its ``jobs/`` settings except ``train.gpus_per_worker=0`` (CPU) and ``train.workers=1``
(and, for SimCLR, the batch, warm-up, epochs and folds above). Both macro AUC scales are reported:
``test_macro_auc`` (ours: labels with positives and negatives in the test fold) and
``test_macro_auc_reference`` (every label, an unscorable one counted as 0.5, as the reference does).

``--quick`` is a dry run of the script (1 seed, 2 epochs per evaluation, 1 pretraining epoch, no
timing run): it prints the same lines, its RESULT lines marked quick in the line before them.

5. Diagnostic rows (``--no-diagnostics`` skips them; not the paper's settings): the random-init and SSL
   linear rows again with ``eval.head_bias_init=prior``. With ~3 steps per epoch the paper's linear
   head (bias started near 0, every output at probability 0.5) spends its whole run learning the label
   frequencies through the features' common direction and ranks records inversely (AUC below 0.5 even
   on its training records); started at the prior it learns the labels. These rows separate probe
   convergence from representation quality.

Prints ``RESULT fidelity supervised_auc=..``, ``RESULT fidelity random_linear_auc=..`` and
``RESULT fidelity ssl_linear_auc=..`` (means over seeds of ``test_macro_auc``), then
``RESULT fidelity random_linear_prior_auc=..`` and ``RESULT fidelity ssl_linear_prior_auc=..``, then
diagnostic lines (SSL against random-init on the test and on the fold-9 validation AUCs). Writes every
run's summary to ``--out`` (default ``fidelity.json`` in a new temporary directory, printed at the end).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PTBXL = ROOT.parent / "shared" / "data" / "ptb-xl-sample"
sys.path.insert(0, str(ROOT))

JOBS = ROOT / "jobs"
TRAIN_FOLDS = [1, 2, 3, 4, 5, 6, 7, 8]
VAL_FOLDS = [9]
#: the three rows: name in RESULT lines, job file (the ssl_linear row adds eval.encoder)
ROWS = (("supervised", "paper/eval-supervised.yaml"), ("random_linear", "paper/eval-linear.yaml"),
        ("ssl_linear", "paper/eval-linear.yaml"))
#: diagnostic rows (not the paper's settings): the two linear rows with the head's bias started at the
#: label prior (eval.head_bias_init=prior), which tells probe convergence apart from representation quality
PRIOR = ["eval.head_bias_init=prior"]
DIAGNOSTIC_ROWS = (("random_linear_prior", "paper/eval-linear.yaml"), ("ssl_linear_prior", "paper/eval-linear.yaml"))
CPU_ONLY = ["train.gpus_per_worker=0", "train.workers=1"]


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds expects comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    return seeds


def prepare(out: Path) -> Path:
    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.ptbxl import PtbxlSource

    prepare_store([PtbxlSource(PTBXL, rate=100, fs_out=100.0)], out, fs=100.0,
                  workers=min(2, os.cpu_count() or 1), progress=False)
    return out


def ssl_config(store: Path, epochs: int, batch: int):
    """jobs/pretrain/simclr.yaml on CPU, folds 1-8 (probe on fold 9), warm-up 10 % of ``epochs``."""
    from ecg_ray.config import load_config

    config = load_config(JOBS / "pretrain" / "simclr.yaml", [
        f"data.store={store}", "data.stores=null", f"data.train_folds={TRAIN_FOLDS}",
        f"data.val_folds={VAL_FOLDS}", "data.test_folds=null", *CPU_ONLY, f"train.batch_size={batch}",
        f"train.epochs={epochs}", f"optim.warmup_epochs={0.1 * epochs}", "seed=0"])
    # The test fold must stay unseen by pretraining and by the probe's model selection alike.
    seen = set(config.data.train_folds or []) | set(config.data.val_folds or []) | set(config.data.test_folds or [])
    if not config.data.train_folds or 10 in seen:
        raise SystemExit(f"refusing to pretrain on folds {sorted(seen)}: fold 10 is the test fold")
    return config


def steady_epoch_s(run_dir: str) -> float | None:
    """Seconds between the last two epochs' checkpoints (steps + probe + checkpoint of one epoch).

    The run's wall time also holds Ray's start-up and the first epoch's warm-up, which a longer run
    pays only once; the checkpoint files' write times separate the two. None if fewer than two
    checkpoints are left.
    """
    times = sorted(p.stat().st_mtime for p in Path(run_dir).glob("checkpoint_*/state.pt"))
    return times[-1] - times[-2] if len(times) >= 2 else None


def pretrain(config, runs: Path) -> dict:
    from ecg_ray.train.trainer import run_pretraining

    summary = run_pretraining(config, runs)
    probe = summary.get("val_macro_auc")
    print(f"pretrain simclr seed {config.seed}: {summary['epochs']} epoch(s), batch {config.train.batch_size}, "
          f"{summary['records']} records, final online probe (fold 9) AUC "
          f"{_fmt(probe)}, wall {summary['wall_s']:.0f} s", flush=True)
    return summary


def evaluate(row: str, job: str, store: Path, seed: int, runs: Path, extra: list[str]) -> dict:
    from ecg_ray.config import load_config
    from ecg_ray.train.trainer import run_evaluation

    config = load_config(JOBS / job, [f"data.store={store}", *CPU_ONLY, f"seed={seed}", *extra])
    summary = run_evaluation(config, runs)
    summary.update(row=row, seed=seed)
    print(f"{row:<13} seed {seed}: test_macro_auc {summary['test_macro_auc']:.4f}, test_macro_auc_reference "
          f"{summary['test_macro_auc_reference']:.4f} (val {summary['val_macro_auc']:.4f}, best epoch "
          f"{summary['best_epoch']}), wall {summary['wall_s']:.0f} s", flush=True)
    return summary


def _fmt(value) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.4f}"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1, as the paper's std over runs); std is nan for one value."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma-separated evaluation seeds")
    parser.add_argument("--ssl-minutes", type=float, default=10.0,
                        help="wall-clock budget of the SimCLR pretraining (sets its epoch count)")
    parser.add_argument("--ssl-epochs", type=int, default=None,
                        help="SimCLR epochs, skipping the timing run (default: from --ssl-minutes)")
    parser.add_argument("--ssl-batch", type=int, default=176,
                        help="SimCLR batch: 2 steps cover the 353 records of folds 1-8 (the paper's 4096 is GPU-sized)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file of every run's summary")
    parser.add_argument("--keep-runs", action="store_true", help="keep the store and the run directories")
    parser.add_argument("--ssl-export", choices=("latest", "best"), default="latest",
                        help="which SimCLR epoch the SSL row evaluates: the last (default) or the best by the "
                             "online probe on fold 9 (on this sample the probe barely moves, so 'best' picks an "
                             "early epoch by noise)")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="skip the two linear rows with the head bias started at the label prior")
    parser.add_argument("--quick", action="store_true",
                        help="dry run: 1 seed, 2 epochs per evaluation, 1 pretraining epoch")
    args = parser.parse_args()
    if not (PTBXL / "ptbxl_database.csv").exists():
        print(f"fidelity: the PTB-XL sample is not at {PTBXL} (expected ../shared/data/ptb-xl-sample beside "
              f"the project root); nothing to run", file=sys.stderr)
        return 2
    seeds = args.seeds[:1] if args.quick else args.seeds
    eval_extra = ["train.epochs=2"] if args.quick else []
    out = args.out or Path(tempfile.mkdtemp(prefix="ecg_bench_fidelity_out_")) / "fidelity.json"

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray
    from ray.data import DataContext

    from ecg_ray.train.checkpoint import export_encoder

    cpus = os.cpu_count() or 2
    work = Path(tempfile.mkdtemp(prefix="ecg_bench_fidelity_"))
    runs = work / "runs"
    t_all = time.perf_counter()
    report: dict = {"quick": args.quick, "seeds": seeds, "cpus": cpus, "runs": []}
    try:
        t0 = time.perf_counter()
        store = prepare(work / "ptbxl")
        print(f"prepared the PTB-XL sample at 100 Hz in {time.perf_counter() - t0:.0f} s; folds "
              f"{TRAIN_FOLDS[0]}-{TRAIN_FOLDS[-1]} train, 9 validation, 10 test; seeds {seeds}", flush=True)
        ray.init(address="local", num_cpus=cpus, object_store_memory=1_000_000_000, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False

        for row, job in ROWS[:2]:
            for seed in seeds:
                report["runs"].append(evaluate(row, job, store, seed, runs, eval_extra))

        # SimCLR: time a short run, then pretrain from scratch for as many epochs as the budget allows.
        budget_s = args.ssl_minutes * 60
        timing = None
        if args.quick:
            epochs = 1
        elif args.ssl_epochs is not None:
            epochs = args.ssl_epochs
        else:
            timing = pretrain(ssl_config(store, 2, args.ssl_batch), runs)
            per_epoch = steady_epoch_s(timing["run_dir"]) or timing["wall_s"] / 2
            overhead = max(0.0, timing["wall_s"] - 2 * per_epoch)
            epochs = max(1, int((budget_s - overhead) // per_epoch))
            timing.update(steady_epoch_s=per_epoch, overhead_s=overhead)
            print(f"timing run: {per_epoch:.1f} s per epoch after the first, {overhead:.0f} s start-up -> "
                  f"{epochs} epochs for {args.ssl_minutes:g} min", flush=True)
        config = ssl_config(store, epochs, args.ssl_batch)
        ssl = pretrain(config, runs)
        encoder = work / "simclr_encoder.pt"
        exported = export_encoder(ssl["run_dir"], encoder, best=args.ssl_export == "best")
        best = export_encoder(ssl["run_dir"], work / "simclr_best.pt", best=True)
        print(f"exported the encoder of epoch {exported['epoch']} of {ssl['epochs']} ({args.ssl_export}; the best by "
              f"{best['selected_by']} on fold 9 was epoch {best['epoch']}, {_fmt(best['selected_value'])}); one "
              f"pretraining (seed 0) feeds the linear evaluation of every seed", flush=True)
        report["pretraining"] = {"timing_run": timing, "run": ssl, "export": exported, "best": best,
                                 "batch_size": config.train.batch_size,
                                 "warmup_epochs": config.optim.warmup_epochs, "budget_s": budget_s}
        for seed in seeds:
            report["runs"].append(evaluate(ROWS[2][0], ROWS[2][1], store, seed, runs,
                                           [f"eval.encoder={encoder}", *eval_extra]))
        all_rows = ROWS
        if not args.no_diagnostics:
            all_rows = ROWS + DIAGNOSTIC_ROWS
            for seed in seeds:
                report["runs"].append(evaluate(DIAGNOSTIC_ROWS[0][0], DIAGNOSTIC_ROWS[0][1], store, seed, runs,
                                               [*PRIOR, *eval_extra]))
                report["runs"].append(evaluate(DIAGNOSTIC_ROWS[1][0], DIAGNOSTIC_ROWS[1][1], store, seed, runs,
                                               [f"eval.encoder={encoder}", *PRIOR, *eval_extra]))

        rows = {}
        for row, _ in all_rows:
            done = [r for r in report["runs"] if r["row"] == row]
            rows[row] = {key: mean_std([r[key] for r in done])
                         for key in ("test_macro_auc", "test_macro_auc_reference", "val_macro_auc")}
        report["rows"] = {row: {k: {"mean": m, "std": s} for k, (m, s) in v.items()} for row, v in rows.items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str))

        total = time.perf_counter() - t_all
        print(f"\nPTB-XL sample, xresnet1d50, {len(seeds)} seed(s) {seeds}, mean (std) over seeds; total {total / 60:.1f} min")
        print("| row | test_macro_auc (ours) | test_macro_auc_reference (0.5 unscorable) | val macro AUC (fold 9) |")
        print("|---|---|---|---|")
        for row, v in rows.items():
            cells = [f"{m:.3f} ({s:.3f})" if math.isfinite(s) else f"{m:.3f} (n/a)" for m, s in v.values()]
            print(f"| {row} | {' | '.join(cells)} |")
        print(f"SimCLR pretraining: {ssl['epochs']} epoch(s) (batch {config.train.batch_size}, warm-up "
              f"{config.optim.warmup_epochs:g} epochs) in {ssl['wall_s'] / 60:.1f} min, final online probe AUC "
              f"{_fmt(ssl.get('val_macro_auc'))}, exported epoch {exported['epoch']} ({args.ssl_export}; best probe "
              f"AUC {_fmt(best['selected_value'])} at epoch {best['epoch']}); one pretraining (seed 0) for every "
              f"linear seed")
        if args.quick:
            print("QUICK dry run (1 seed, 2 epochs per evaluation, 1 pretraining epoch): the RESULT lines below "
                  "check the script, not the paper")
        for row, _ in all_rows:
            print(f"RESULT fidelity {row}_auc={rows[row]['test_macro_auc'][0]:.3f}")
        test_diff = rows["ssl_linear"]["test_macro_auc"][0] - rows["random_linear"]["test_macro_auc"][0]
        val_diff = rows["ssl_linear"]["val_macro_auc"][0] - rows["random_linear"]["val_macro_auc"][0]
        agree = "agree" if (test_diff > 0) == (val_diff > 0) else "disagree"
        print(f"diagnostic: ssl_linear - random_linear: test macro AUC {test_diff:+.3f}, fold-9 validation macro "
              f"AUC {val_diff:+.3f} (they {agree} in direction)")
        if "ssl_linear_prior" in rows:
            diff = rows["ssl_linear_prior"]["test_macro_auc"][0] - rows["random_linear_prior"]["test_macro_auc"][0]
            vdiff = rows["ssl_linear_prior"]["val_macro_auc"][0] - rows["random_linear_prior"]["val_macro_auc"][0]
            print(f"diagnostic (head bias at the label prior): ssl_linear_prior - random_linear_prior: test macro "
                  f"AUC {diff:+.3f}, fold-9 validation macro AUC {vdiff:+.3f}")
        print(f"per-run summaries: {out}")
    finally:
        ray.shutdown()
        if args.keep_runs:
            print(f"store, encoder and run directories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)  # the JSON's run_dir paths then point nowhere: --keep-runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
