"""``prepare --ray`` on a two-node local cluster (two raylets on 127.0.0.1 via ``ray.cluster_utils``).

Run by tests/data/test_parallel_prepare.py in its own process (a process holds one Ray
connection; the test session's may already be up). Usage::

    python tests/data/prepare_cluster.py OUT RECORDS

Each node offers one CPU, so the read and write tasks must spread over both. Prints one JSON
line: the node ids of the cluster and the nodes the read and write tasks ran on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests` importable here and in Ray workers


def main(out: str, records: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from ecg_ray.data.parallel_prepare import prepare_on_ray
    from tests.data.parallel_sources import ShortRecords

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
    return {"nodes": nodes, "read_nodes": dict(stats.read_nodes), "write_nodes": dict(stats.write_nodes)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
