"""``ecg-ray embed``: a trained encoder over every record of a store, into a Parquet file of embeddings."""

from __future__ import annotations

import argparse

from ecg_ray.cli.arguments import int_list as _int_list
from ecg_ray.cli.arguments import location as _location


def add_embed_parser(sub) -> None:
    """The ``embed`` subcommand on the CLI's subparsers."""
    p = sub.add_parser(
        "embed", help="embed every record of a store with a trained encoder (Parquet)",
        description="Run an exported encoder over every record of a store on a Ray cluster (Ray Data actors, "
                    "a GPU each where the cluster has GPUs, CPU otherwise) and write one Parquet file: record_id, "
                    "dataset, fold, patient_id, record_index and the embedding (a fixed-size list of float32), "
                    "one row per record (its windows averaged, as evaluation does) or per window. Records are "
                    "resampled to the encoder's rate first. The file appears only when complete.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--encoder", type=_location, default=None,
                        help="exported encoder (ecg-ray export: a .pt file or a safetensors folder)")
    source.add_argument("--pretrained", type=_location, default=None, metavar="RUN_DIR",
                        help="a run directory: the encoder of its latest checkpoint")
    p.add_argument("--store", type=_location, required=True, help="prepared store, local or URI")
    p.add_argument("--out", type=_location, required=True, help="Parquet file to write, local or URI (e.g. emb.parquet)")
    p.add_argument("--folds", type=_int_list, default=None, help="comma-separated folds (default: every record)")
    p.add_argument("--pool", choices=("mean", "windows"), default="mean",
                   help="mean: one row per record, its windows' embeddings averaged; windows: one row per window")
    p.add_argument("--window", type=int, default=None,
                   help="window in samples at the encoder's rate (default: its training crop; 0 = whole record)")
    p.add_argument("--stride", type=int, default=None, help="stride in samples (default: half the window)")
    p.add_argument("--leads", type=lambda t: [x for x in t.replace(" ", "").split(",") if x], default=None,
                   metavar="I,II,V1", help="keep only these leads, the others zeroed (as evaluate's data.leads)")
    p.add_argument("--batch-size", type=int, default=256, help="windows per encoder forward pass")
    p.add_argument("--workers", type=int, default=None,
                   help="encoder actors (default: one per GPU, else CPUs - 1)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing ecg_ray embeddings file at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on the last line (records, dim, out, windows, too_short, seconds, "
                        "records_per_s, ...)")


def cmd_embed(args) -> dict:
    from ecg_ray.embedding import embed_store, from_encoder_file
    from ecg_ray.train.checkpoint import run_encoder_source

    source = from_encoder_file(args.encoder) if args.encoder else run_encoder_source(args.pretrained)
    summary = embed_store(source, args.store, args.out, folds=args.folds, pool=args.pool, window=args.window,
                          stride=args.stride, batch_size=args.batch_size, workers=args.workers,
                          gpus_per_worker=args.gpus_per_worker, overwrite=args.overwrite,
                          progress=not args.no_progress, leads=args.leads)
    rows = "" if args.pool == "mean" else f" ({summary['rows']} window rows)"
    print(f"embedded {summary['records']} records with {summary['encoder']} -> {summary['dim']}-wide vectors{rows} "
          f"in {summary['seconds']:.1f} s ({summary['records_per_s']:.0f} records/s)")
    short = summary["too_short"]
    if short["count"]:
        print(f"  too short   {short['count']} record(s) under {short['min_samples']} samples "
              f"({short['min_seconds']} s) not embedded: {', '.join(short['first_ids'][:5])}"
              f"{' ...' if short['count'] > 5 else ''} (all listed in the file's metadata)")
    print(f"  out         {summary['out']}")
    return summary
