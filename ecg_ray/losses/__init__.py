"""Self-supervised losses as pure torch functions (no Ray), correct for any number of workers.

Each loss returns the mean over this worker's own samples; where it needs other workers' data
(NT-Xent negatives, Sinkhorn marginals, CPC batch negatives) it communicates through
:mod:`ecg_ray.distributed`, which is a no-op without a process group. With equal local batches
the mean of the workers' losses equals the single-process loss on the concatenated batch, and
DDP's gradient averaging reproduces the single-process gradient.
"""

from ecg_ray.losses.byol import byol_loss, symmetric_byol_loss
from ecg_ray.losses.cpc import NEGATIVE_MODES, cpc_infonce, expected_initial_loss, sample_sequence_negatives
from ecg_ray.losses.ntxent import nt_xent
from ecg_ray.losses.swav import sinkhorn, swav_loss

__all__ = [
    "NEGATIVE_MODES",
    "byol_loss",
    "cpc_infonce",
    "expected_initial_loss",
    "nt_xent",
    "sample_sequence_negatives",
    "sinkhorn",
    "swav_loss",
    "symmetric_byol_loss",
]
