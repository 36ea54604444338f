"""Shared choices of the per-method tests: which encoder a registered method is tested with.

The method's own smoke job (jobs/smoke/<name>.yaml) names the encoder it is meant for (e.g.
``vit1d_xs`` for ``jepa``); a method without one gets a small encoder of the kind it declares
(``Method.encoder_output``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ecg_ray.methods import methods

SMOKE_JOBS = Path(__file__).resolve().parents[1] / "jobs" / "smoke"


def encoder_for(name: str) -> str:
    job = SMOKE_JOBS / f"{name}.yaml"
    if job.exists():
        encoder = ((yaml.safe_load(job.read_text()) or {}).get("model") or {}).get("encoder")
        if encoder:
            return encoder
    return "cpc_4fc2lstm" if methods()[name].encoder_output == "sequence" else "xresnet1d50"
