"""Representation collapse, measured every epoch of pretraining and judged at the end of a run.

Two figures per epoch, both cheap:

* ``embedding_std``: the mean over dimensions of the per-dimension standard deviation (over the
  batch) of the L2-normalised embeddings, as solo-learn logs it ("z_std"). Identical embeddings
  (a collapsed network) give 0; embeddings spread evenly over the unit sphere of dimension d give
  about 1/sqrt(d), since each coordinate of a random unit vector has variance 1/d. Each method
  computes it on the device for every training batch (``ecg_ray.methods.embedding_stats``); the worker sums
  it on the device and reads it back once per epoch, with the loss (no extra host syncs).
* ``loss_uniform_ratio``: the epoch's loss over the value its loss takes when every similarity is
  equal, i.e. when the network tells no sample from another: ln(2N - 1) for NT-Xent with N the
  global batch (SimCLR), ln K for SwAV's swapped prediction with K prototypes, ln(1 + negatives)
  for CPC's InfoNCE (``Method.uniform_loss``). BYOL's loss has no such value (a collapsed BYOL
  can reach loss 0): it is judged by the embedding std alone.

The verdict (:func:`assess`, in the driver from the run's history) is "collapsed" when, in each
of the last :data:`COLLAPSE_EPOCHS` epochs (1: the epoch whose encoder the run leaves behind; an
epoch's mean still holds the steps before a collapse, so a run that collapses during its
second-to-last epoch would escape a two-epoch rule), the embedding std is below ``STD_FRACTION / sqrt(d)``
(a tenth of the spread of random directions), or the loss is within :data:`LOSS_TOLERANCE`
(0.2 %) of its uniform value: stuck there, as SimCLR at ``optim.lr=1e6`` (ln(2N - 1) to four
digits, with std 0) or the known "SwAV loss stuck at ln K". The tolerance is that tight, and
two-sided, because healthy SwAV and CPC runs start within a few percent of (and above) their
uniform value and cross it while they learn; a healthy SimCLR starts 2-5 % below it. Measured
on 8-12 CPU steps of each method (d = 16 SimCLR/BYOL projections, 128 SwAV, 512 CPC latents):
healthy std 0.08-0.24 (SimCLR), 0.19 (BYOL), 0.06-0.07 (SwAV), 0.036 (CPC), all above their
thresholds 0.025, 0.025, 0.0088, 0.0044; at lr=1e6 SimCLR 0.0000 and SwAV 0.0014. This module
imports no torch at load time: the report judges runs from their history files without it.
"""

from __future__ import annotations

import math
from typing import Any

#: embedding std below this fraction of 1/sqrt(d) counts as collapsed
STD_FRACTION = 0.1
#: a loss within this relative distance of its uniform-similarity value is stuck there
LOSS_TOLERANCE = 0.002
#: the verdict needs the sign in each of the last this many epochs (fewer if the run has fewer)
COLLAPSE_EPOCHS = 1


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def assess(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The collapse verdict of a run from its per-epoch metrics; None when they are not recorded.

    Returns ``{"collapsed", "reason", "embedding_std", "embedding_std_threshold",
    "embedding_std_random", "loss_uniform_ratio", "loss_uniform", "epochs_checked"}`` with the
    figures of the last epoch (``reason`` is None for a healthy run).
    """
    recent = history[-COLLAPSE_EPOCHS:]
    if not recent or not all(_finite(h.get("embedding_std")) and _finite(h.get("embedding_dim")) for h in recent):
        return None  # a run from before these metrics were recorded
    last = recent[-1]
    dim = int(last["embedding_dim"])
    threshold = STD_FRACTION / math.sqrt(dim)
    epochs = f"epoch {last.get('epoch', len(history) - 1)}" if len(recent) == 1 else f"the last {len(recent)} epochs"
    reasons = []
    if all(h["embedding_std"] < STD_FRACTION / math.sqrt(h["embedding_dim"]) for h in recent):
        reasons.append(f"embedding std {last['embedding_std']:.3g} below {threshold:.3g} ({STD_FRACTION}/sqrt({dim})) "
                       f"in {epochs}")
    ratios = [h.get("loss_uniform_ratio") for h in recent]
    if all(_finite(r) for r in ratios) and all(abs(r - 1) <= LOSS_TOLERANCE for r in ratios):
        reasons.append(f"loss {last['loss']:.4f} within {LOSS_TOLERANCE:.1%} of its uniform-similarity value "
                       f"{last['loss_uniform']:.4f} in {epochs}")
    return {"collapsed": bool(reasons), "reason": "; ".join(reasons) or None,
            "embedding_std": float(last["embedding_std"]), "embedding_std_threshold": threshold,
            "embedding_std_random": 1 / math.sqrt(dim),
            "loss_uniform_ratio": float(last["loss_uniform_ratio"]) if _finite(last.get("loss_uniform_ratio")) else None,
            "loss_uniform": float(last["loss_uniform"]) if _finite(last.get("loss_uniform")) else None,
            "epochs_checked": len(recent)}


def epoch_metrics(mean_std: float | None, dim: int | None, mean_loss: float, uniform: float | None) -> dict[str, float]:
    """The per-epoch collapse figures that go into the history and Ray's metrics."""
    metrics: dict[str, float] = {}
    if mean_std is not None and dim:
        metrics.update(embedding_std=mean_std, embedding_dim=int(dim))
    if uniform:
        metrics.update(loss_uniform=uniform, loss_uniform_ratio=mean_loss / uniform)
    return metrics
