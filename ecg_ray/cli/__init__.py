"""The ``ecg-ray`` command: parse arguments, call one library function per verb, print results.

Errors that ecg_ray raises on purpose (bad input, missing files, bad config) are printed as one
line naming the file or key, with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecg_ray.cli.arguments import (
    float_list as _float_list,
)
from ecg_ray.cli.arguments import (
    int_list as _int_list,
)
from ecg_ray.cli.arguments import (
    location as _location,
)
from ecg_ray.cli.arguments import (
    str_list as _str_list,
)
from ecg_ray.cli.arguments import (
    workers as _workers,
)
from ecg_ray.errors import EcgRayError
from ecg_ray.methods.registry import MethodChoices

PREPARE_KINDS = ("ptbxl", "cinc", "code15", "numpy", "wfdb", "synthetic")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecg-ray",
        description="Self-supervised representation learning on 12-lead ECG, distributed with Ray.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "prepare", help="turn a dataset into a zarr v3 store",
        description="Read ECG records from a source, check them, resample them to one rate and lead "
                    "order, and write one zarr v3 store (signals + Parquet labels/metadata + manifest). "
                    "The store appears only when complete.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("kind", choices=PREPARE_KINDS, help="source format")
    p.add_argument("src", nargs="*", type=Path,
                   help="source path(s): a PTB-XL directory, CinC directory tree(s), CODE-15 directory or "
                        "HDF5 file, a .npy/.zarr array, a WFDB directory tree; none for synthetic")
    p.add_argument("--out", required=True, type=_location,
                   help="store directory to create (local, or a URI such as s3://bucket/stores/ptbxl)")
    p.add_argument("--target-fs", type=float, default=100.0, help="store sampling rate in Hz")
    p.add_argument("--rate", type=int, choices=(100, 500), default=100,
                   help="ptbxl: read records100 (100) or records500 (500)")
    p.add_argument("--fs", type=float, default=None, help="numpy: sampling rate of the input array (required)")
    p.add_argument("--labels", type=Path, default=None,
                   help="numpy: CSV of labels/metadata, one row per record; wfdb: the same, joined on a 'path' "
                        "or 'id' column")
    p.add_argument("--record-list", type=Path, default=None,
                   help="wfdb: CSV with a 'path' column (relative to the directory) listing the records to read, "
                        "e.g. MIMIC-IV-ECG's record_list.csv; other columns become metadata (default: every .hea)")
    p.add_argument("--dataset", default=None,
                   help="wfdb: the name in the store's dataset column (default: wfdb); one word without '/'")
    p.add_argument("--layout", choices=("auto", "NTC", "NCT"), default="auto",
                   help="numpy: axis order (N, T, 12) or (N, 12, T)")
    p.add_argument("--exams-csv", type=Path, default=None, help="code15: exams.csv if not beside the HDF5 files")
    p.add_argument("--records", type=int, default=2000, help="synthetic: number of records")
    p.add_argument("--classes", type=_str_list, default=None, help="synthetic: comma-separated class names")
    p.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="skip: leave a bad record out and list it with its reason; fail: stop at the first")
    p.add_argument("--exclude-datasets", type=_str_list, default=[], help="comma-separated dataset names")
    p.add_argument("--exclude-folds", type=_int_list, default=[], help="comma-separated folds")
    p.add_argument("--exclude-patients", type=Path, default=None, help="text file, one patient id per line")
    p.add_argument("--ptbxl-db", type=Path, default=None,
                   help="ptbxl_database.csv used to map PTB-XL patients (for --exclude-ptbxl-folds)")
    p.add_argument("--exclude-ptbxl-folds", type=_int_list, default=[],
                   help="drop every record of any patient with a PTB-XL record in these folds, in any "
                        "source (e.g. 9,10 keeps PTB-XL validation/test patients out of pretraining)")
    p.add_argument("--codec", choices=("none", "lz4", "zstd"), default=None,
                   help="chunk compression (default: the store default, see bench/RESULTS.md)")
    p.add_argument("--chunk-samples", type=int, default=None, help="time samples per zarr chunk")
    p.add_argument("--workers", type=int, default=None, help="reader processes (default: min(4, CPUs))")
    p.add_argument("--ray", action="store_true",
                   help="read and write in Ray tasks across the cluster (automatic when RAY_ADDRESS names one); "
                        "the same store, bit for bit; a local --out must be on a file system every node mounts")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing complete ecg_ray store at --out (anything else there, or a store "
                        "that holds or lies inside an input, is refused)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")

    p = sub.add_parser(
        "inspect", help="summarize (and verify) a store",
        description="Print a store's summary: records, leads, rate, labels, folds, datasets, skipped "
                    "records and size. --verify re-computes every checksum.",
    )
    p.add_argument("store", type=_location, nargs="+",
                   help="store directory or URI; several stores: each, then the combined corpus")
    p.add_argument("--verify", action="store_true", help="re-check checksums and the record index")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on the last line of stdout (records, leads, fs, label_names, "
                        "per_fold, per_dataset, skipped, bytes, ...; for several stores: stores, records, "
                        "hours, per_dataset, compatible)")

    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining on Ray Train",
        description="Pretrain an ECG encoder with a self-supervised method (SimCLR, BYOL, SwAV, CPC or any "
                    "registered one) on Ray Train workers fed by the "
                    "Ray Data stream. Settings come from --config (YAML), then --set key=value overrides, then "
                    "the explicit flags. Every epoch reports loss, lr, samples/s and a validation metric and "
                    "writes a checkpoint into the run directory OUTPUT/<method>-<timestamp>.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # The choices are the method registry's, looked up only when --method is used or help is shown
    # (the registry imports torch; building the parser for `prepare` must not).
    p.add_argument("--method", choices=MethodChoices(), default=None,
                   help="method (default: the config's method.name)")
    p.add_argument("--store", type=_location, action="append", default=None,
                   help="prepared store, local or URI (data.store); repeat it to mix several stores "
                        "(data.stores), equal shares unless --store-weights")
    p.add_argument("--store-weights", type=_float_list, default=None, metavar="W1,W2,...",
                   help="mixing weight of each --store, in order: each epoch draws weight/sum(weights) of its "
                        "records from that store (e.g. 4,1 -> 80/20)")
    p.add_argument("--config", type=Path, default=None, help="YAML config, e.g. jobs/pretrain/simclr.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--workers", type=_workers, default=None, metavar="N|MIN-MAX",
                   help="training workers (train.workers); MIN-MAX for elastic training, e.g. 2-8")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per worker (train.gpus_per_worker)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (train.epochs); with --resume, the new total")
    p.add_argument("--output", type=_location, default=None,
                   help="directory or URI (s3://bucket/runs) that receives the run directory")
    p.add_argument("--resume", type=_location, default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR from its last checkpoint with its saved config")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on the last line (method, epochs, loss, samples_per_s, run_dir, "
                        "checkpoint, records, too_short, records_per_store, ...)")

    p = sub.add_parser(
        "evaluate", help="linear / fine-tune / supervised evaluation",
        description="Train a classifier on the training folds (random 2.5 s crops, multi-label BCE), select the "
                    "epoch by validation macro AUC, and report test macro AUC over sliding windows averaged "
                    "per record, with a bootstrap 95%% interval. linear without an encoder probes a "
                    "random-init encoder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--mode", choices=("linear", "finetune", "supervised", "knn", "logreg"), default=None,
                   help="evaluation mode (eval.mode); knn and logreg are probes on cached embeddings (--embeddings, "
                        "or the store embedded first with --encoder/--pretrained) fitted without a training run")
    p.add_argument("--embeddings", type=_location, default=None, metavar="EMB",
                   help="knn/logreg: embeddings file of `ecg-ray embed` (eval.embeddings)")
    p.add_argument("--store", type=_location, default=None, help="prepared labelled store, local or URI (data.store)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--encoder", type=_location, default=None, help="exported encoder file (ecg-ray export)")
    source.add_argument("--pretrained", type=_location, default=None, metavar="RUN_DIR", help="pretraining run directory")
    p.add_argument("--config", type=Path, default=None, help="YAML config, e.g. jobs/smoke/eval-linear.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--workers", type=int, default=None, help="training workers (train.workers)")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per worker")
    p.add_argument("--epochs", type=int, default=None, help="epochs (train.epochs)")
    p.add_argument("--output", type=_location, required=True,
                   help="directory or URI (s3://bucket/runs) that receives the run directory")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on the last line (mode, val_macro_auc, test_macro_auc, "
                        "test_macro_auc_ci, test_macro_auc_reference, labels_scored, labels_excluded, best_epoch, "
                        "run_dir, ...)")

    p = sub.add_parser(
        "sweep", help="run a Ray Tune sweep (hyperparameters, label fractions, noise)",
        description="Run the trials of a sweep file (jobs/sweeps/*.yaml) with Ray Tune, each trial fitting its "
                    "own TorchTrainer, and write results.parquet/.csv (one row per trial) and, for noise "
                    "sweeps, robustness.parquet/.csv into the output directory. Re-running on the same "
                    "output directory resumes the sweep.",
    )
    p.add_argument("--config", type=Path, required=True, help="sweep file, e.g. jobs/sweeps/label-fraction.yaml")
    p.add_argument("--store", type=_location, default=None, help="prepared store for every trial (data.store)")
    p.add_argument("--output", type=_location, default=None,
                   help="sweep directory or URI (default runs/sweeps/NAME)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every trial (repeatable)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")

    p = sub.add_parser("report", help="write a Markdown report with plots",
                       description="Collect results tables, evaluation summaries and pretraining histories "
                                   "under DIR into a Markdown report with PNG plots.")
    p.add_argument("dir", help="local directory of runs and sweeps (sync a cloud one down first)")
    p.add_argument("--out", type=Path, default=None, help="report file (default DIR/report/report.md)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")

    p = sub.add_parser("export", help="export a run's encoder weights",
                       description="Write the encoder of RUN_DIR's newest checkpoint (or, with --best, of its best "
                                   "epoch by the validation metric) to a file loadable with "
                                   "torch.load(..., weights_only=True), or with --format safetensors to a folder "
                                   "(model.safetensors, config.json, README.md model card) in the Hugging Face "
                                   "Hub layout; ecg_ray.load_encoder(PATH) loads either (see README).")
    p.add_argument("run_dir", type=_location, help="pretraining run directory or URI")
    p.add_argument("--out", type=_location, required=True,
                   help="output file or URI, e.g. encoder.pt (a folder with --format safetensors)")
    p.add_argument("--format", choices=["torch", "safetensors"], default="torch",
                   help="torch: one weights-only file (default); safetensors: a portable folder")
    p.add_argument("--best", action="store_true",
                   help="the epoch with the best validation metric (probe macro AUC, else held-out SSL loss) "
                        "instead of the latest")
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")

    p = sub.add_parser("compare", help="paired bootstrap of two evaluations on the same test records",
                       description="Compare two `ecg-ray evaluate` runs (run directories or evaluation.json "
                                   "files) on the same test records: the macro AUC difference B - A with its "
                                   "paired-bootstrap 95%% interval and p-value, on our scale and the reference's, "
                                   "plus per-label differences. Refuses runs on different test records.")
    p.add_argument("a", type=_location, help="evaluation A (run directory or evaluation.json)")
    p.add_argument("b", type=_location, help="evaluation B (run directory or evaluation.json)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="resampling seed")
    p.add_argument("--min-test-positives", type=int, default=None,
                   help="labels need this many test positives to be compared (default 1; 10 = recent benchmark papers)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on the last line")

    add_embed_parser(sub)

    p = sub.add_parser("download", help="download a public dataset",
                       description="Download a public ECG dataset from PhysioNet (resumable).")
    p.add_argument("dataset", choices=("ptbxl",))
    p.add_argument("dir", type=Path, help="destination directory")
    p.add_argument("--rate", choices=("100", "500", "both"), default="100",
                   help="which PTB-XL records to fetch")
    p.add_argument("--timeout", type=float, default=20.0, help="network timeout in seconds")
    return parser


def pretrain_config(args):
    """Config from --config, then --set, then explicit flags (validated before Ray starts)."""
    from ecg_ray.config import load_config

    flags = [f"method.name={args.method}"] if args.method is not None else []
    return load_config(args.config, [*args.overrides, *flags, *_run_flags(args)])


def _run_flags(args) -> list[str]:
    """--store/--workers/--gpus-per-worker/--epochs as overrides (they win over --set)."""
    flags = []
    stores = [args.store] if isinstance(args.store, str) else list(args.store or [])
    weights = getattr(args, "store_weights", None)
    if weights is not None and len(weights) != len(stores):
        raise EcgRayError(f"--store-weights gives {len(weights)} weight(s) for {len(stores)} --store(s)")
    if len(stores) == 1 and weights is None:
        flags += [f"data.store={stores[0]}", "data.stores=null"]  # the flag wins over a config's data.stores
    elif stores:
        # JSON is YAML: the override parser reads this list of mappings as it is.
        specs = [{"path": path, "weight": w} for path, w in zip(stores, weights or [1.0] * len(stores), strict=True)]
        flags += ["data.store=null", f"data.stores={json.dumps(specs)}"]
    if args.workers is not None:
        workers, max_workers = args.workers if isinstance(args.workers, tuple) else (args.workers, None)
        flags.append(f"train.workers={workers}")
        if max_workers is not None:
            flags.append(f"train.max_workers={max_workers}")
    if args.gpus_per_worker is not None:
        flags.append(f"train.gpus_per_worker={args.gpus_per_worker}")
    if args.epochs is not None:
        flags.append(f"train.epochs={args.epochs}")
    return flags


def cmd_pretrain(args) -> dict:
    from ecg_ray.config_values import check_values
    from ecg_ray.train.trainer import resume_config, run_pretraining

    if args.resume is not None:
        if args.config is not None or args.method is not None:
            raise EcgRayError("--resume uses the run's saved config; drop --config/--method (use --set to change keys)")
        if (args.store and len(args.store) > 1) or args.store_weights is not None:
            raise EcgRayError("--resume takes at most one --store (a new location of the run's store) and no "
                              "--store-weights; use --set data.stores=... to change a mixed corpus")
        config = resume_config(args.resume, args.overrides + ([f"data.store={args.store[0]}", "data.stores=null"]
                                                             if args.store else []), args.epochs)
        check_values(config)  # --set on a resumed run gets the range checks of a new one
    else:
        config = pretrain_config(args)
    summary = run_pretraining(config, args.output, resume=args.resume)
    print(f"pretrained {summary['method']} ({summary['encoder']}) for {summary['epochs']} epoch(s): "
          f"loss {' -> '.join(f'{v:.4f}' for v in summary['loss'][:1] + summary['loss'][-1:])}, "
          f"{summary['samples_per_s'] or 0:.0f} samples/s")
    if len(summary["records_per_store"]) > 1:
        print("  per store   " + ", ".join(f"{k}: {v}" for k, v in summary["records_per_store"].items())
              + " records per epoch")
    short = summary["too_short"]
    if short["count"]:
        print(f"  too short   {short['count']} record(s) under data.crop ({short['min_seconds']} s) left out: "
              f"{', '.join(short['first_ids'][:5])}{' ...' if short['count'] > 5 else ''}")
    print(f"  run dir     {summary['run_dir']}")
    print(f"  checkpoint  {summary['checkpoint']}")
    return summary


def cmd_evaluate(args) -> dict:
    from ecg_ray.config import load_config
    from ecg_ray.train.trainer import run_evaluation

    flags = []
    if args.mode is not None:
        flags.append(f"eval.mode={args.mode}")
    if args.encoder is not None:
        flags.append(f"eval.encoder={args.encoder}")
    if args.pretrained is not None:
        flags.append(f"eval.pretrained={args.pretrained}")
    if args.embeddings is not None:
        flags.append(f"eval.embeddings={args.embeddings}")
    config = load_config(args.config, [*args.overrides, *flags, *_run_flags(args)])
    summary = run_evaluation(config, args.output)
    low, high = summary["test_macro_auc_ci"]
    chosen = (", ".join(f"{k}={v}" for k, v in summary["selected"].items()) if "selected" in summary
              else f"epoch {summary['best_epoch']}")
    print(f"{summary['variant']}: test macro AUC {summary['test_macro_auc']:.4f} [{low:.4f}, {high:.4f}] over "
          f"{summary['labels_scored']} labels ({summary['labels_skipped']} without positives and negatives "
          f"skipped); best {chosen} (val {summary['val_macro_auc']:.4f})")
    for row in summary["robustness"]:
        print(f"  noise {row['noise_type']:<16} SNR {row['snr_db']:>6.1f} dB: test macro AUC {row['test_macro_auc']:.4f}")
    print(f"  run dir     {summary['run_dir']}")
    return summary


def cmd_sweep(args) -> dict:
    from ecg_ray.tune import check_sweep_stores, load_sweep, run_sweep

    spec = load_sweep(args.config, args.overrides, args.store)
    check_sweep_stores(spec)  # stores, folds and encoder files of the trials, before Ray starts
    output = args.output or Path("runs") / "sweeps" / spec["name"]
    summary = run_sweep(spec, output)
    print(f"sweep {summary['name']}: {summary['trials']} trial(s), {summary['errored']} errored")
    if summary["errored"]:
        print(f"  errored trials: see {summary['sweep_dir']}/tune/*/error.txt")
    for name, path in summary["tables"].items():
        print(f"  {name:<11} {path}")
    return summary


from ecg_ray.cli.data_commands import cmd_download, cmd_inspect, cmd_prepare  # noqa: E402
from ecg_ray.cli.embed_commands import add_embed_parser, cmd_embed  # noqa: E402
from ecg_ray.cli.result_commands import cmd_compare, cmd_export, cmd_report  # noqa: E402

COMMANDS = {"prepare": cmd_prepare, "inspect": cmd_inspect, "download": cmd_download,
            "pretrain": cmd_pretrain, "export": cmd_export, "evaluate": cmd_evaluate, "sweep": cmd_sweep,
            "report": cmd_report, "compare": cmd_compare, "embed": cmd_embed}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except EcgRayError as exc:
        # One line whatever the message holds (a wrapped library message may span several).
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"ecg-ray {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ecg-ray {args.command}: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False):
        print(json.dumps(result, default=str))
    failed = result.get("verified") is False or bool(result.get("errored"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
