"""Connecting to Ray: the cluster in RAY_ADDRESS, or a small local instance (one definition for every entry point)."""

from __future__ import annotations

import os


def ensure_ray() -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a small local instance."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        # A small object store: the stream moves ~12 KB crops, not whole datasets. address="local":
        # without RAY_ADDRESS, never attach to whatever `ray start` cluster this machine last ran
        # (Ray's default); jobs submitted with `ray job submit` get RAY_ADDRESS from Ray itself.
        ray.init(address="local", object_store_memory=1_000_000_000, include_dashboard=False,
                 configure_logging=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
