"""A real 2-process gloo group on loopback for the distributed tests (losses, gathers).

``run_gloo(fn, tmp_path, *args)`` spawns ``world`` processes; each joins a gloo group that meets
through a file in ``tmp_path``, runs ``fn(rank, *args)`` and saves the dict it returns; the parent
gets the dicts in rank order. ``fn`` must be a module-level function (spawned processes import it
by name). A worker's exception comes back with its traceback, and a hung collective fails the test
after ``timeout`` seconds instead of stalling the run. gloo binds to loopback, so this runs in a
network namespace with only 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, fn, init_file: str, out_dir: str, world: int, args: tuple) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    if sys.platform.startswith("linux"):
        # gloo otherwise resolves the hostname, which may name an interface the namespace lacks.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        torch.save(fn(rank, *args), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_gloo(fn, tmp_path: Path, *args, world: int = 2, timeout: float = 120) -> list[dict]:
    """``fn(rank, *args)`` in each rank of a ``world``-process gloo group; its return values, rank order."""
    tmp_path = Path(tmp_path)
    ctx = mp.spawn(_entry, args=(fn, str(tmp_path / "rendezvous"), str(tmp_path), world, args), nprocs=world,
                   join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.terminate()
            pytest.fail(f"distributed workers did not finish within {timeout:.0f} s")
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
