"""``ecg-ray prepare``, ``inspect`` and ``download``: building, checking and fetching data stores."""

from __future__ import annotations

import time

from ecg_ray.errors import EcgRayError

# Options that only some source kinds read, by argparse dest. Given to another kind they would do
# nothing, silently (a --record-list that did not filter anything), so they are refused instead.
KIND_OPTIONS = {
    "rate": ("ptbxl",),
    "fs": ("numpy",),
    "labels": ("numpy", "wfdb"),
    "record_list": ("wfdb",),
    "dataset": ("wfdb",),
    "layout": ("numpy",),
    "exams_csv": ("code15",),
    "records": ("synthetic",),
    "classes": ("synthetic",),
    "seed": ("synthetic",),
}


def check_kind_options(args) -> None:
    """Refuse, in one line and before anything is read, options that ``args.kind`` does not read.

    An option counts as given when its value differs from the parser's default (``--rate 100``
    with cinc is the default and changes nothing either way).
    """
    from ecg_ray.cli import build_parser

    defaults = vars(build_parser().parse_args(["prepare", args.kind, "--out", "unused"]))
    foreign = [f"--{dest.replace('_', '-')} ({'/'.join(kinds)})" for dest, kinds in KIND_OPTIONS.items()
               if args.kind not in kinds and getattr(args, dest, defaults[dest]) != defaults[dest]]
    if foreign:
        raise EcgRayError(f"prepare {args.kind} does not read {', '.join(foreign)}: remove "
                          f"{'it' if len(foreign) == 1 else 'them'}")
    # Two more options that would otherwise be read and then do nothing.
    if args.ptbxl_db is not None and not args.exclude_ptbxl_folds:
        raise EcgRayError("--ptbxl-db is only read for --exclude-ptbxl-folds: give both, or neither")
    from ecg_ray.data.parallel_prepare import ray_wanted

    if args.workers is not None and ray_wanted(args.ray):
        raise EcgRayError("--workers sizes the local process pool, but this prepare runs in Ray tasks (--ray, or "
                          "RAY_ADDRESS naming a cluster), one per CPU of the cluster: remove --workers")


def _make_sources(args) -> list:
    kind, src = args.kind, list(args.src)
    if kind == "synthetic":
        from ecg_ray.data.sources.synthetic import SyntheticSource

        if src:
            raise EcgRayError("prepare synthetic takes no source path (use --records, --classes, --seed)")
        return [SyntheticSource(n_records=args.records, fs_out=args.target_fs, seed=args.seed,
                                classes=args.classes)]
    if not src:
        raise EcgRayError(f"prepare {kind} needs a source path")
    for path in src:
        if not path.exists():
            raise EcgRayError(f"{path}: no such file or directory")
    if kind == "ptbxl":
        from ecg_ray.data.sources.ptbxl import PtbxlSource

        return [PtbxlSource(path, rate=args.rate, fs_out=args.target_fs) for path in src]
    if kind == "cinc":
        from ecg_ray.data.sources.cinc import CincSource

        return [CincSource(src, fs_out=args.target_fs)]
    if kind == "code15":
        from ecg_ray.data.sources.code15 import Code15Source

        return [Code15Source(path, fs_out=args.target_fs, exams_csv=args.exams_csv) for path in src]
    if kind == "numpy":
        from ecg_ray.data.sources.arrays import ArraySource

        if args.fs is None:
            raise EcgRayError("prepare numpy needs --fs (the sampling rate of the array)")
        if len(src) != 1:
            raise EcgRayError("prepare numpy takes exactly one array path")
        return [ArraySource(src[0], fs=args.fs, labels_csv=args.labels, layout=args.layout,
                            fs_out=args.target_fs)]
    if kind == "wfdb":
        from ecg_ray.data.sources.wfdb_dir import WfdbSource

        if len(src) != 1:
            raise EcgRayError("prepare wfdb takes exactly one directory")
        return [WfdbSource(src[0], record_list=args.record_list, labels_csv=args.labels, fs_out=args.target_fs,
                           dataset=args.dataset if args.dataset is not None else "wfdb")]
    raise EcgRayError(f"unknown source kind {kind}")


def _prepare_inputs(args) -> list:
    """Every path ``prepare`` reads: sources, label/exam tables, the patient list, the PTB-XL database."""
    return [*args.src, args.labels, args.exams_csv, args.exclude_patients, args.ptbxl_db,
            getattr(args, "record_list", None)]


def cmd_prepare(args) -> dict:
    from ecg_ray.data.parallel_prepare import prepare_on_ray, ray_wanted
    from ecg_ray.data.prepare import Exclusions, prepare_store
    from ecg_ray.data.store import DEFAULT_CHUNK_SAMPLES, DEFAULT_CODEC, EcgStore
    from ecg_ray.overwrite import check_store_target

    # First, before any input is read: options the source kind does not read, a refused --out (or
    # --overwrite), a bad --dataset name cost nothing.
    check_kind_options(args)
    if args.dataset is not None:
        from ecg_ray.data.sources.wfdb_dir import check_dataset_name

        check_dataset_name(args.dataset)
    check_store_target(args.out, inputs=_prepare_inputs(args), overwrite=args.overwrite)
    patients = set()
    if args.exclude_patients is not None:
        if not args.exclude_patients.exists():
            raise EcgRayError(f"{args.exclude_patients}: no such file")
        patients = {line.strip() for line in args.exclude_patients.read_text().splitlines() if line.strip()}
    exclusions = Exclusions(datasets=set(args.exclude_datasets), folds=set(args.exclude_folds),
                            patients=patients, ptbxl_db=args.ptbxl_db, ptbxl_folds=set(args.exclude_ptbxl_folds))
    sources = _make_sources(args)
    start = time.perf_counter()
    common = {"fs": args.target_fs, "on_error": args.on_error, "exclusions": exclusions,
              "chunk_samples": args.chunk_samples or DEFAULT_CHUNK_SAMPLES, "codec": args.codec or DEFAULT_CODEC,
              "overwrite": args.overwrite, "progress": not args.no_progress,
              "inputs": [p for p in _prepare_inputs(args) if p is not None]}
    if ray_wanted(args.ray):  # --ray, or RAY_ADDRESS naming a cluster: read and write in Ray tasks
        prepare_on_ray(sources, args.out, **common)
    else:
        prepare_store(sources, args.out, workers=args.workers, **common)
    elapsed = time.perf_counter() - start
    summary = EcgStore(args.out).summary()
    summary["seconds"] = round(elapsed, 2)
    _print_summary(summary, title=f"prepared {args.out} in {elapsed:.1f} s")
    return summary


def cmd_inspect(args) -> dict:
    from ecg_ray.data.corpus import combined_summary
    from ecg_ray.data.store import EcgStore

    # --verify opens on the manifest alone: a damaged table is then reported as a checksum failure
    # like any other file, instead of stopping the open; without it a damaged table fails in one line.
    stores = [EcgStore(path, tables=not args.verify) for path in args.store]
    summaries = [_inspect_one(store, args.verify) for store in stores]
    if len(stores) == 1:
        return summaries[0]
    corpus = combined_summary(summaries)
    print(f"corpus of {len(stores)} stores")
    print(f"  records     {corpus['records']} ({corpus['hours']} h), {corpus['bytes'] / 1e6:.1f} MB on disk")
    print("  datasets    " + ", ".join(f"{k}: {v}" for k, v in corpus["per_dataset"].items()))
    if not corpus["compatible"]:
        print("  WARNING: the stores differ in sampling rate or leads; they cannot be pretrained on together")
    if args.verify:
        corpus["verified"] = all(s["verified"] for s in summaries)
    return corpus


def _inspect_one(store, verify: bool) -> dict:
    summary = store.summary()
    if verify:
        problems = store.verify()
        summary["verified"] = not problems
        summary["problems"] = problems
    _print_summary(summary, title=f"store {store.path}")
    if verify and summary["problems"]:
        for problem in summary["problems"]:
            print(f"  VERIFY FAILED: {problem}")
    elif verify:
        print("  verify: all checksums match")
    return summary


def _print_summary(summary: dict, title: str) -> None:
    print(title)
    print(f"  records     {summary['records']} ({summary['hours']} h at {summary['fs']} Hz), "
          f"{summary['bytes'] / 1e6:.1f} MB on disk, codec {summary['codec']}")
    print(f"  leads       {' '.join(summary['leads'])}")
    labels = summary["label_names"]
    print(f"  labels      {len(labels)}: {' '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}")
    if summary.get("label_sets"):
        print("  label sets  " + ", ".join(f"{k} ({v})" for k, v in summary["label_sets"].items()))
    print("  datasets    " + ", ".join(f"{k}: {v}" for k, v in summary["per_dataset"].items()))
    if summary["per_fold"]:
        print("  folds       " + ", ".join(f"{k}: {v}" for k, v in summary["per_fold"].items()))
    if summary.get("excluded"):
        print("  excluded    " + ", ".join(f"{k}: {v}" for k, v in summary["excluded"].items()))
    warnings = summary.get("label_warnings") or {}
    if warnings.get("total"):
        texts = warnings["unmapped"]
        print(f"  label text  {warnings['records']} record(s) carry diagnosis text kept as label names: "
              + ", ".join(f"{k!r}: {v}" for k, v in list(texts.items())[:10]) + (" ..." if len(texts) > 10 else ""))
    skipped = summary["skipped"]
    print(f"  skipped     {len(skipped)}")
    for item in skipped[:20]:
        print(f"    {item['id']}: {item['file']}: {item['reason']}")
    if len(skipped) > 20:
        print(f"    ... {len(skipped) - 20} more (see manifest.json)")


def cmd_download(args) -> dict:
    from ecg_ray.data.download import download_ptbxl

    result = download_ptbxl(args.dir, fs_choice=args.rate, timeout=args.timeout)
    print(f"downloaded PTB-XL to {args.dir}")
    return {"dir": str(args.dir), "result": result if isinstance(result, dict | list | str | int) else None}


