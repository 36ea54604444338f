"""``ecg-ray report``, ``export`` and ``compare``: what users do with finished runs."""

from __future__ import annotations

from pathlib import Path

from ecg_ray.errors import EcgRayError


def cmd_report(args) -> dict:
    from ecg_ray.report import write_report
    from ecg_ray.storage import is_uri

    if is_uri(args.dir):
        raise EcgRayError(f"{args.dir}: report reads a local directory; copy it down first, e.g. "
                          f"aws s3 sync {args.dir} ./{Path(args.dir.split('://', 1)[1]).name}")
    path = write_report(Path(args.dir), args.out)
    print(f"report written to {path}")
    return {"report": str(path)}


def cmd_export(args) -> dict:
    from ecg_ray.train.checkpoint import export_encoder

    summary = export_encoder(args.run_dir, args.out, best=args.best, format=getattr(args, "format", "torch"))
    chosen = ("latest epoch" if summary["selected_by"] == "latest"
              else f"best epoch by {summary['selected_by']} = {summary['selected_value']:.4f}")
    what = " as a safetensors folder (model.safetensors, config.json, README.md)" if summary["format"] == "safetensors" else ""
    print(f"exported {summary['encoder']} ({summary['method']}, epoch {summary['epoch']}, {chosen}) "
          f"to {summary['out']}{what}")
    return summary


def cmd_compare(args) -> dict:
    from ecg_ray.evaluation.compare import compare_evaluations, format_comparison

    if args.bootstrap < 1:
        raise EcgRayError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    kwargs = {} if args.min_test_positives is None else {"min_test_positives": args.min_test_positives}
    result = compare_evaluations(args.a, args.b, n_boot=args.bootstrap, seed=args.seed, **kwargs)
    print(format_comparison(result))
    return result
