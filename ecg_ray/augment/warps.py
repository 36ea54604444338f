"""Smooth random time warps that keep both ends of the window (DynamicTimeWarp)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Augmentation
from .checks import _integer, _number
from .draws import _uniform
from .interpolation import _resample


class DynamicTimeWarp(Augmentation):
    """Smooth random time warp: locally stretch and squeeze the beat timing, keep both ends.

    The warp is a monotonic path p(t) from 0 to T-1 built as the cumulative sum of random local
    speeds: ``warps + 2`` evenly spaced knots get speeds exp(U(-ln 2, ln 2)), linearly
    interpolated to every sample (so the path is smooth, no kinks at sample level). The path's
    deviation from the identity is then scaled down so that it never exceeds ``radius`` samples;
    scaling by c <= 1 keeps the path monotonic because (1 - c) * t + c * p(t) is a mix of two
    increasing functions. Output sample t reads the input at p(t). ``radius=0`` is the identity.
    All leads share the warp (timing belongs to the heart, not to a lead).

    The reference implementation aligned the signal to a random series with a DTW library and
    a Sakoe-Chiba band of ``radius``; this keeps the meaning of ``radius`` (the largest time
    shift, in samples) without running DTW per sample.
    """

    def __init__(self, warps: int = 3, radius: float = 10):
        warps = _integer("DynamicTimeWarp", "warps", warps, 1)
        radius = _number("DynamicTimeWarp", "radius", radius, 0.0)
        super().__init__(warps=warps, radius=radius)
        self.warps = warps
        self.radius = radius

    def _apply(self, x, generator):
        b, _, t = x.shape
        knots = self.warps + 2
        log_speed = _uniform((b, 1, knots), -math.log(2.0), math.log(2.0), generator, x.device)
        speed = F.interpolate(log_speed.exp(), size=t, mode="linear", align_corners=True)[:, 0]
        path = torch.cumsum(speed, dim=-1)
        path = (path - path[:, :1]) * ((t - 1) / (path[:, -1:] - path[:, :1]))
        grid = torch.arange(t, device=x.device, dtype=torch.float32)[None, :]
        deviation = path - grid
        # the ends are pinned exactly (rounding in the normalisation could move them by an ulp)
        # (zero_ rather than "= 0.0": item assignment of a Python number builds a host tensor each step)
        deviation[:, 0].zero_()
        deviation[:, -1].zero_()
        largest = deviation.abs().amax(dim=-1, keepdim=True)
        shrink = (self.radius / largest.clamp(min=1e-12)).clamp(max=1.0)
        return _resample(x, grid + shrink * deviation)
