"""Shared test helpers for input the driver must refuse before Ray starts: one line, exit status 2."""

from __future__ import annotations

from pathlib import Path


def refuse(capsys, *args) -> str:
    """``ecg-ray ARGS`` in-process; asserts exit status 2, a single stderr line and no Ray started by it.

    Returns that line. When Ray already runs (a session fixture of another test), the caller's own
    check that no run directory was written stands in for the Ray check.
    """
    import ray

    from ecg_ray.cli import main

    ray_was_running = ray.is_initialized()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    if not ray_was_running:
        assert not ray.is_initialized(), "the refusal started Ray"
    return lines[0]


def synthetic_store(root: Path, records: int = 40) -> Path:
    """A small labelled store with folds 1..10 (``prepare synthetic``), at 100 Hz."""
    from ecg_ray.cli import main

    out = root / "synthetic"
    assert main(["prepare", "synthetic", "--records", str(records), "--out", str(out), "--no-progress"]) == 0
    return out
