"""``prepare --ray`` on a two-node local cluster (two raylets on 127.0.0.1 via ``ray.cluster_utils``).

Run by tests/data/test_parallel_prepare.py in its own process (a process holds one Ray
connection; the test session's may already be up). Usage::

    python tests/data/prepare_cluster.py OUT RECORDS
    python tests/data/prepare_cluster.py s3 RECORDS

Each node offers one CPU, so the read and write tasks must spread over both. Prints one JSON
line: the node ids of the cluster and the nodes the read and write tasks ran on. With ``s3``
the store goes to ``s3://cluster/stores/short`` on a moto server this script starts on loopback
(before the cluster, so every node's workers inherit its environment), and the line also holds
the sha256 of each file of the store, its manifest and the staging prefixes left beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests` importable here and in Ray workers


def _start_s3() -> str:
    """A moto S3 server on a free loopback port, with the environment pointing every client at it."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"})
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    import boto3

    boto3.client("s3").create_bucket(Bucket="cluster")
    return "s3://cluster/stores/short"


def _describe_remote(uri: str) -> dict:
    from ecg_ray import storage

    files = {rel: hashlib.sha256(storage.read_bytes(storage.join(uri, rel))).hexdigest()
             for rel, _ in storage.list_files(uri) if rel != "manifest.json"}
    return {"files": files, "manifest": json.loads(storage.read_text(storage.join(uri, "manifest.json"))),
            "partials": storage.list_dirs(storage.parent(uri), ".short.partial-*")}


def main(out: str, records: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from ecg_ray.data.parallel_prepare import prepare_on_ray
    from tests.data.parallel_sources import ShortRecords

    remote = out == "s3"
    if remote:
        out = _start_s3()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 100_000_000, "include_dashboard": False,
        "node_ip_address": "127.0.0.1"})
    cluster.add_node(num_cpus=1, object_store_memory=100_000_000, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        _, stats = prepare_on_ray([ShortRecords(records)], out, chunk_samples=4096, progress=False,
                                  records_per_task=100, chunks_per_task=1)
    finally:
        ray.shutdown()
        cluster.shutdown()
    result = {"nodes": nodes, "read_nodes": dict(stats.read_nodes), "write_nodes": dict(stats.write_nodes)}
    if remote:
        result.update(_describe_remote(out))
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
