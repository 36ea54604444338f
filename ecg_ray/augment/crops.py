"""Crop-like time-axis transforms: RandomResizedCrop (two warps) and TimeOut.

Both draw every per-sample parameter as one tensor over the batch; nothing loops over samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ecg_ray.errors import ConfigError

from .base import Augmentation
from .checks import _choice, _pair
from .draws import _rand, _uniform
from .interpolation import _lerp_at, _resample

#: accepted values of ``RandomResizedCrop(warp=...)``
WARPS = ("uniform", "reference")


class RandomResizedCrop(Augmentation):
    """Crop a random contiguous fraction U(scale) of the window and resize it back to T samples.

    ``warp="uniform"`` (default) stretches the crop evenly: a crop of ``L = f * T`` samples
    starts at a uniform (fractional) position in [0, T - L] and output sample j reads the input
    at ``start + j * (L - 1) / (T - 1)`` by linear interpolation, so the crop's first and last
    samples land on the output's ends. ``scale=(1, 1)`` is the exact identity.

    ``warp="reference"`` is Mehari & Strodthoff's ``TRandomResizedCrop``, a random non-uniform
    time warp: a crop of ``m = round(f * T)`` whole samples (at least 2) starts at a uniform
    integer position in [0, T - m]; its samples go to output positions 0, T - 1 and m - 2
    distinct positions drawn uniformly from 1..T-2, sorted, and each output between two assigned
    positions is the linear interpolation of those two crop samples. ``scale=(1, 1)`` assigns
    every position and is again the identity.
    """

    def __init__(self, scale: Sequence[float] = (0.5, 1.0), warp: str = "uniform"):
        scale = _pair("RandomResizedCrop", "scale", scale, 0.0, 1.0)
        if scale[0] <= 0.0:
            raise ConfigError(f"RandomResizedCrop: 'scale' must be > 0, got {list(scale)}")
        warp = _choice("RandomResizedCrop", "warp", warp, WARPS)
        super().__init__(scale=scale, warp=warp)
        self.scale = scale
        self.warp = warp

    def _apply(self, x, generator):
        b, _, t = x.shape
        if self.warp == "reference":
            index, weight = self._reference_sources(b, t, generator, x.device)
            return _lerp_at(x, index, weight)
        frac = _uniform((b,), *self.scale, generator, x.device)
        length = frac * t
        start = _rand((b,), generator, x.device) * (t - length)
        step = (length - 1).clamp(min=0) / (t - 1)
        j = torch.arange(t, device=x.device, dtype=torch.float32)
        return _resample(x, start[:, None] + j[None, :] * step[:, None])

    def _reference_sources(self, b: int, t: int, generator: torch.Generator | None,
                           device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Input sample (B, T) int64 and interpolation weight toward the next sample (B, T).

        Every output reads ``(1 - w) x[i] + w x[i + 1]`` for the reference's warp.
        """
        # at least 2 crop samples: the two fixed ends need distinct samples to pin
        m = torch.round(_uniform((b,), *self.scale, generator, device) * t).clamp(2, t)
        start = torch.floor(_rand((b,), generator, device) * (t - m + 1))
        start = torch.minimum(start, t - m)  # the product can round up to t - m + 1
        # a uniform random (m-2)-subset of the interior outputs, for every row at once even
        # though m varies: the interior positions whose random keys rank below m - 2
        order = _rand((b, t - 2), generator, device).argsort(dim=-1)
        picked = torch.arange(t - 2, device=device)[None, :] < (m - 2)[:, None]
        inner = torch.zeros_like(picked).scatter_(-1, order, picked)
        ends = torch.ones((b, 1), dtype=torch.bool, device=device)
        assigned = torch.cat([ends, inner, ends], dim=-1)  # in order, so already "sorted"
        j = torch.arange(t, device=device)
        # k-th assigned output holds crop sample k; every output lies between the last assigned
        # position at or before it (prev) and the first at or after it (after)
        k = assigned.cumsum(dim=-1) - 1
        prev = torch.where(assigned, j, 0).cummax(dim=-1).values
        after = torch.where(assigned, j, t - 1).flip(-1).cummin(dim=-1).values.flip(-1)
        # assigned outputs have prev == after: weight 0, they read their crop sample exactly
        weight = (j - prev) / (after - prev).clamp(min=1)
        return start.long()[:, None] + k, weight


class TimeOut(Augmentation):
    """Zero a random contiguous run of ``round(f * T)`` samples, f ~ U(fraction), in all leads.

    The start is uniform over every position where the run fits (the reference's randint bound
    could never place the run at the very end of the window).
    """

    def __init__(self, fraction: Sequence[float] = (0.2, 0.4)):
        fraction = _pair("TimeOut", "fraction", fraction, 0.0, 1.0)
        super().__init__(fraction=fraction)
        self.fraction = fraction

    def _apply(self, x, generator):
        b, _, t = x.shape
        length = torch.round(_uniform((b,), *self.fraction, generator, x.device) * t)
        start = torch.floor(_rand((b,), generator, x.device) * (t - length + 1))
        start = torch.minimum(start, t - length)
        pos = torch.arange(t, device=x.device, dtype=torch.float32)[None, :]
        inside = (pos >= start[:, None]) & (pos < (start + length)[:, None])
        return x.masked_fill(inside[:, None, :], 0.0)
