"""Random lead masking (RandomLeadMask): zero a random subset of leads per sample.

ECG-FM (McKeen et al. 2024, fairseq-signals' ``RandomLeadsMask`` with ``mask_leads_selection:
random``) trains its encoder with each lead of a sample zeroed independently with probability
``mask_leads_prob`` = 0.5, so that the encoder also works when a recorder gives fewer leads (the
missing ones read as zero, which is what ``data.leads`` and ``missing_leads="zero"`` feed it).
Here the per-lead probability is ``mask_prob``; the spec's ``p`` is, as for every transform, the
probability that a sample is masked at all (ECG-FM: 1).

One difference: ECG-FM can zero every lead of a sample (probability ``mask_prob ** leads``,
2.4e-4 at 0.5 with 12 leads), which leaves an all-zero input with nothing to learn from. Here a
sample whose draw masks every lead keeps one lead, chosen uniformly. So the number of masked
leads follows Binomial(leads, mask_prob) with the all-masked mass moved to ``leads - 1``, and
each lead is masked with probability ``mask_prob - mask_prob ** leads / leads``.
"""

from __future__ import annotations

import torch

from .base import Augmentation
from .checks import _number
from .draws import _rand


class RandomLeadMask(Augmentation):
    """Zero each lead of each sample with probability ``mask_prob`` (never every lead of a sample).

    Masked leads are exactly 0.0 (``torch.where``, not a product, so that a masked value is never
    -0.0 or NaN); kept leads are returned unchanged. The draws per call are fixed in number (a
    (B, leads) uniform for the mask and a (B,) uniform for the rescued lead), so the generator's
    stream does not depend on the data.
    """

    def __init__(self, mask_prob: float = 0.5):
        mask_prob = _number("RandomLeadMask", "mask_prob", mask_prob, 0.0, 1.0)
        super().__init__(mask_prob=mask_prob)
        self.mask_prob = mask_prob

    def _apply(self, x, generator):
        b, c, _ = x.shape
        masked = _rand((b, c), generator, x.device) < self.mask_prob
        # A sample with every lead masked keeps one, drawn uniformly (min: U can round up to 1.0 in float32).
        rescued = (_rand((b,), generator, x.device) * c).long().clamp(max=c - 1)
        rescue = (torch.arange(c, device=x.device)[None, :] == rescued[:, None]) & masked.all(dim=1, keepdim=True)
        kept = ~masked | rescue
        return torch.where(kept[:, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
