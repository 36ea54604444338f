"""Benchmark: ``prepare --ray`` to an object store against ``prepare --ray`` to a local directory.

Run:  .venv/bin/python bench/prepare_cloud.py [--records 5000] [--cpus 2]

The object store is a moto S3 server on loopback, started here before Ray (so the tasks inherit its
endpoint): it stands in for S3 in request pattern, not in speed (moto is a Python server in this
process, and its objects live in this machine's memory). Both runs prepare the same ``--records``
synthetic records (10 s at 500 Hz generated, resampled to 100 Hz) on one local Ray instance with
``--cpus`` CPUs, warmed once; the two stores are checked to be file-for-file identical.

What it shows, beside records/s of each (``RESULT prepare_cloud ratio=`` = S3 / local):
- the driver's local disk: the peak size of this process's ``$TMPDIR/ecg_ray-store-staging-*``
  directory while preparing to S3, against the store's size (``RESULT prepare_cloud
  driver_disk_share=``; the pool path and the old ``--ray`` staged the whole store there: 1.0);
- the requests per kind, counted at the server: batch uploads, ranged batch GETs, chunk uploads
  and the server-side copies that move chunks into place (a copy is a PUT; pyarrow uploads every
  object as a multipart upload: a POST, a PUT per part and a completing POST).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start_s3() -> None:
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                       "AWS_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"})
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")


class RequestCounter:
    """Counts S3 requests by kind from the moto server's access log (werkzeug's logger)."""

    def __init__(self):
        import logging

        self.counts: Counter = Counter()
        self.active = True
        handler = logging.Handler()
        handler.emit = self._emit
        logger = logging.getLogger("werkzeug")
        for old in list(logger.handlers):  # werkzeug's own stderr handler: one line per request
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def _emit(self, record) -> None:
        text = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())  # werkzeug colours its lines
        if not self.active or '"' not in text:
            return
        method, path = text.split('"')[1].split()[:2]
        kind = "batch" if "/.read-batches/" in path else "chunk" if "/signals/c/" in path else "other"
        if "?uploads" in path or "uploadId=" in path:
            method = f"{method}(multipart)"
        self.counts[f"{method} {kind}"] += 1


def staging_peak(stop: threading.Event, peak: list) -> None:
    root = Path(tempfile.gettempdir())
    while not stop.wait(0.05):
        total = 0
        for directory in root.glob("ecg_ray-store-staging-*"):
            for path in directory.rglob("*"):
                try:
                    total += path.stat().st_size if path.is_file() else 0
                except OSError:
                    pass
        peak[0] = max(peak[0], total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    start_s3()
    import ray

    from ecg_ray import storage
    from ecg_ray.data.parallel_prepare import prepare_on_ray
    from ecg_ray.data.sources.synthetic import SyntheticSource

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-cloud-"))
    try:
        prepare_on_ray([SyntheticSource(n_records=200)], work / "warm", progress=False)  # workers up, imports done
        source = [SyntheticSource(n_records=args.records)]
        start = time.perf_counter()
        local_manifest, _ = prepare_on_ray(source, work / "local", progress=False)
        local_s = time.perf_counter() - start

        counter = RequestCounter()
        stop, peak = threading.Event(), [0]
        sampler = threading.Thread(target=staging_peak, args=(stop, peak), daemon=True)
        sampler.start()
        uri = "s3://bench/stores/synthetic"
        start = time.perf_counter()
        manifest, stats = prepare_on_ray(source, uri, progress=False)
        s3_s = time.perf_counter() - start
        stop.set()
        sampler.join()
        counter.active = False

        local = {p.relative_to(work / "local").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in (work / "local").rglob("*") if p.is_file() and p.name != "manifest.json"}
        remote = {rel: hashlib.sha256(storage.read_bytes(storage.join(uri, rel))).hexdigest()
                  for rel, _ in storage.list_files(uri) if rel != "manifest.json"}
        assert remote == local, "the S3 store differs from the local one"
        records = manifest["records"]
        print(f"records {records}, store {manifest['bytes'] / 1e6:.1f} MB, "
              f"{sum(1 for r in manifest['checksums'] if r.startswith('signals/c/'))} chunk files, "
              f"{stats.read_tasks} read / {stats.write_tasks} write tasks")
        print(f"local: {local_s:.1f} s ({records / local_s:.0f} records/s); "
              f"s3: {s3_s:.1f} s ({records / s3_s:.0f} records/s; read {stats.read_seconds:.1f} s, "
              f"write {stats.write_seconds:.1f} s)")
        print("s3 requests:", dict(sorted(counter.counts.items())))
        print(f"driver staging peak {peak[0] / 1e6:.2f} MB of a {manifest['bytes'] / 1e6:.1f} MB store")
        print(f"RESULT prepare_cloud ratio={local_s / s3_s:.2f}")
        print(f"RESULT prepare_cloud driver_disk_share={peak[0] / manifest['bytes']:.4f}")
        assert local_manifest["records"] == records
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
