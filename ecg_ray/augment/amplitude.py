"""Per-lead amplitude scaling (ChannelResize): the gain differences between leads and recorders."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .base import Augmentation
from .checks import _pair
from .draws import _uniform


class ChannelResize(Augmentation):
    """Scale each lead of each sample by exp(U(log_range)) (default factors between 0.5 and 2)."""

    def __init__(self, log_range: Sequence[float] = (math.log(0.5), math.log(2.0))):
        log_range = _pair("ChannelResize", "log_range", log_range)
        super().__init__(log_range=log_range)
        self.log_range = log_range

    def _apply(self, x, generator):
        b, c, _ = x.shape
        factor = _uniform((b, c, 1), *self.log_range, generator, x.device).exp()
        return x * factor.to(x.dtype)
