"""Shared test helper: run an ``ecg-ray`` command in-process and return its ``--json`` summary."""

from __future__ import annotations

import json


def run_json(capsys, *args) -> dict:
    """``ecg-ray ARGS --json``: asserts exit code 0 (showing stderr if not), returns the last JSON line."""
    from ecg_ray.cli import main

    code = main([*map(str, args), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return json.loads(captured.out.strip().splitlines()[-1])
