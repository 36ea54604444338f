"""Batched ECG augmentations that run on the batch's device with seeded per-sample randomness.

Every transform takes a float tensor ``x`` of shape (B, leads, T) and a ``torch.Generator`` and
returns a new tensor of the same shape, dtype and device (the input is never modified). Each
sample of the batch gets its own random parameters, all drawn from the generator, so a run is
reproducible from its seed: the same generator state gives the same output. Random numbers are
drawn on the generator's device and moved to the batch's device; pass a generator that lives on
the batch's device (as the trainer does) to avoid host-to-device copies of whole noise tensors.
Generators on different devices produce different streams, so results are reproducible per
device type, not across CPU and GPU.

Nothing loops over samples in Python: crops and time warps are one gather + lerp, noise models
are built from broadcast arithmetic (and one FFT for :class:`EMNoise`).

Amplitudes are in the store's unit, millivolts. For the additive noise models ``max_amplitude``
is a hard bound: the added signal never exceeds it in absolute value (per-sample amplitudes are
drawn from U(0, max_amplitude), per-lead gains from U(-1, 1) or U(0, 1)).

Configuration goes through :func:`build_augmentation`, which takes a list of specs such as
``{"name": "RandomResizedCrop", "scale": [0.5, 1.0], "p": 1.0}``; the optional ``p`` applies the
transform to each sample with that probability. :data:`PAPER_DEFAULT` is the pipeline used by
Mehari & Strodthoff (2022) for SimCLR/BYOL/SwAV: RandomResizedCrop then TimeOut.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ecg_ray.errors import ConfigError

__all__ = [
    "PAPER_DEFAULT",
    "TRANSFORMS",
    "Augmentation",
    "BaselineShift",
    "BaselineWander",
    "ChannelResize",
    "Compose",
    "DynamicTimeWarp",
    "EMNoise",
    "GaussianNoise",
    "PowerlineNoise",
    "RandomApply",
    "RandomResizedCrop",
    "TimeOut",
    "build_augmentation",
]

#: The reference pipeline for the contrastive / bootstrap methods (paper defaults for each).
PAPER_DEFAULT: list[dict[str, Any]] = [{"name": "RandomResizedCrop"}, {"name": "TimeOut"}]


# --------------------------------------------------------------------------- argument checks
# Constructors validate their arguments themselves (not only build_augmentation) so that a
# transform built in code fails as clearly as one built from a config file.

def _number(owner: str, key: str, value: Any, lo: float = -math.inf, hi: float = math.inf,
            lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}: {key!r} must be a finite number, got {value!r}")
    value = float(value)
    if value < lo or value > hi or (lo_open and value == lo):
        low = f"{lo} < " if lo_open else (f"{lo} <= " if lo > -math.inf else "")
        high = f" <= {hi}" if hi < math.inf else ""
        raise ConfigError(f"{owner}: {key!r} must satisfy {low}{key}{high}, got {value!r}")
    return value


def _integer(owner: str, key: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{owner}: {key!r} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _pair(owner: str, key: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{owner}: {key!r} must be a pair [low, high], got {value!r}")
    items = list(value)
    if len(items) != 2:
        raise ConfigError(f"{owner}: {key!r} must be a pair [low, high], got {value!r}")
    a = _number(owner, key, items[0], lo, hi)
    b = _number(owner, key, items[1], lo, hi)
    if a > b:
        raise ConfigError(f"{owner}: {key!r} must have low <= high, got {value!r}")
    return a, b


# --------------------------------------------------------------------------- random draws

def _rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U(0, 1) float32 on ``device``, drawn on the generator's own device (torch requires that)."""
    source = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=source).to(device)


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=source).to(device)


def _uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    return low + (high - low) * _rand(shape, generator, device)


def _resample(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` (B, C, T) at per-sample source positions ``pos`` (B, T_out).

    All leads of a sample share the positions. ``torch.lerp`` is exact at weights 0 and 1, so
    integer positions reproduce the input bit for bit (identity crops stay identities).
    """
    b, c, t = x.shape
    pos = pos.clamp(0, t - 1)
    # clamp to t-2 so that i0 + 1 is always valid; position t-1 then becomes i0=t-2 with weight 1
    i0 = pos.floor().long().clamp(max=max(t - 2, 0))
    weight = (pos - i0).to(x.dtype)[:, None, :]
    idx = i0[:, None, :].expand(b, c, pos.shape[-1])
    left = x.gather(-1, idx)
    right = x.gather(-1, (idx + 1).clamp(max=t - 1))
    return torch.lerp(left, right, weight)


# --------------------------------------------------------------------------- base classes

class Augmentation:
    """Base class: ``__call__(x, generator)`` checks the batch and calls ``_apply``."""

    def __init__(self, **params: Any):
        # kept for repr and for echoing the effective configuration into run logs
        self.params = params

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects a float tensor (batch, leads, time), got "
                             f"{getattr(x, 'shape', type(x))} {getattr(x, 'dtype', '')}")
        if x.shape[0] == 0 or x.shape[2] < 2:
            return x.clone()
        return self._apply(x, generator)

    def _apply(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class RandomApply(Augmentation):
    """Apply ``transform`` to each sample independently with probability ``p``.

    The transform runs on the whole batch and ``torch.where`` keeps the original for the samples
    that were not picked; indexing out the picked subset would force a device-to-host sync per
    batch on GPU. ``p == 0`` skips the transform entirely (and draws no random numbers).
    """

    def __init__(self, transform: Augmentation, p: float = 1.0):
        p = _number(type(transform).__name__, "p", p, 0.0, 1.0)
        super().__init__(transform=transform, p=p)
        self.transform = transform
        self.p = p

    def _apply(self, x, generator):
        if self.p <= 0.0:
            return x.clone()
        if self.p >= 1.0:
            return self.transform(x, generator)
        picked = _rand((x.shape[0],), generator, x.device) < self.p
        return torch.where(picked[:, None, None], self.transform(x, generator), x)


class Compose(Augmentation):
    """Apply transforms in order; an empty Compose returns a copy of its input."""

    def __init__(self, transforms: Iterable[Augmentation] = ()):
        self.transforms = list(transforms)
        super().__init__()

    def _apply(self, x, generator):
        out = x
        for transform in self.transforms:
            out = transform(out, generator)
        return out if out is not x else x.clone()

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self):
        return iter(self.transforms)

    def __repr__(self) -> str:
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"


# --------------------------------------------------------------------------- time-axis transforms

class RandomResizedCrop(Augmentation):
    """Crop a random contiguous fraction U(scale) of the window and stretch it back to T samples.

    A crop of ``L = f * T`` samples starts at a uniform position in [0, T - L]; output sample j
    reads the input at ``start + j * (L - 1) / (T - 1)`` by linear interpolation, so the crop's
    first and last samples land on the output's ends. ``scale=(1, 1)`` is the exact identity.
    """

    def __init__(self, scale: Sequence[float] = (0.5, 1.0)):
        scale = _pair("RandomResizedCrop", "scale", scale, 0.0, 1.0)
        if scale[0] <= 0.0:
            raise ConfigError(f"RandomResizedCrop: 'scale' must be > 0, got {list(scale)}")
        super().__init__(scale=scale)
        self.scale = scale

    def _apply(self, x, generator):
        b, _, t = x.shape
        frac = _uniform((b,), *self.scale, generator, x.device)
        length = frac * t
        start = _rand((b,), generator, x.device) * (t - length)
        step = (length - 1).clamp(min=0) / (t - 1)
        j = torch.arange(t, device=x.device, dtype=torch.float32)
        return _resample(x, start[:, None] + j[None, :] * step[:, None])


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
        deviation[:, 0] = 0.0
        deviation[:, -1] = 0.0
        largest = deviation.abs().amax(dim=-1, keepdim=True)
        shrink = (self.radius / largest.clamp(min=1e-12)).clamp(max=1.0)
        return _resample(x, grid + shrink * deviation)


# --------------------------------------------------------------------------- amplitude transforms

class GaussianNoise(Augmentation):
    """Add white Gaussian noise with standard deviation ``sigma`` (mV), independent per value."""

    def __init__(self, sigma: float = 0.005):
        sigma = _number("GaussianNoise", "sigma", sigma, 0.0)
        super().__init__(sigma=sigma)
        self.sigma = sigma

    def _apply(self, x, generator):
        return x + (self.sigma * _randn(x.shape, generator, x.device)).to(x.dtype)


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


class BaselineShift(Augmentation):
    """Add a constant offset to every lead over one random segment (a step up and back down).

    Per sample: a segment of ``max(1, round(f * T))`` samples with f ~ U(0, max_fraction) at a
    uniform position, and per lead an offset ~ U(-max_amplitude, max_amplitude) mV. Outside the
    segment the signal is unchanged. The reference meant a random sign times a gain
    (2 * randint - 1) * N(1, 1) but operator precedence made it 2 * randint - N(1, 1); here each
    lead's offset is drawn directly and is bounded by ``max_amplitude``.
    """

    def __init__(self, max_amplitude: float = 0.5, max_fraction: float = 0.2):
        max_amplitude = _number("BaselineShift", "max_amplitude", max_amplitude, 0.0)
        max_fraction = _number("BaselineShift", "max_fraction", max_fraction, 0.0, 1.0)
        super().__init__(max_amplitude=max_amplitude, max_fraction=max_fraction)
        self.max_amplitude = max_amplitude
        self.max_fraction = max_fraction

    def _apply(self, x, generator):
        b, c, t = x.shape
        length = torch.round(_uniform((b,), 0.0, self.max_fraction, generator, x.device) * t).clamp(min=1)
        start = torch.floor(_rand((b,), generator, x.device) * (t - length + 1))
        start = torch.minimum(start, t - length)
        offset = _uniform((b, c, 1), -self.max_amplitude, self.max_amplitude, generator, x.device)
        pos = torch.arange(t, device=x.device, dtype=torch.float32)[None, :]
        inside = ((pos >= start[:, None]) & (pos < (start + length)[:, None]))[:, None, :]
        return x + torch.where(inside, offset, 0.0).to(x.dtype)


class BaselineWander(Augmentation):
    """Add slow baseline drift (respiration, body movement): a few low-frequency sinusoids.

    Per sample: ``components`` sinusoids with frequencies U(min_freq, max_freq) Hz, phases
    U(0, 2 pi) and weights U(0, 1) normalised to sum 1 (so the waveform stays within [-1, 1]);
    that waveform times an amplitude U(0, max_amplitude) mV times a per-lead gain U(-1, 1),
    because one physical drift projects onto the leads with different gains and signs.
    """

    def __init__(self, fs: float = 100.0, max_amplitude: float = 0.05, max_freq: float = 0.5,
                 min_freq: float = 0.05, components: int = 5):
        fs = _number("BaselineWander", "fs", fs, 0.0, lo_open=True)
        max_amplitude = _number("BaselineWander", "max_amplitude", max_amplitude, 0.0)
        max_freq = _number("BaselineWander", "max_freq", max_freq, 0.0, fs / 2, lo_open=True)
        min_freq = _number("BaselineWander", "min_freq", min_freq, 0.0, max_freq)
        components = _integer("BaselineWander", "components", components, 1)
        super().__init__(fs=fs, max_amplitude=max_amplitude, max_freq=max_freq, min_freq=min_freq,
                         components=components)
        self.fs, self.max_amplitude = fs, max_amplitude
        self.min_freq, self.max_freq, self.components = min_freq, max_freq, components

    def _apply(self, x, generator):
        b, c, t = x.shape
        k, dev = self.components, x.device
        freq = _uniform((b, k, 1), self.min_freq, self.max_freq, generator, dev)
        phase = _uniform((b, k, 1), 0.0, 2 * math.pi, generator, dev)
        weight = _rand((b, k, 1), generator, dev)
        weight = weight / weight.sum(dim=1, keepdim=True).clamp(min=1e-12)
        amplitude = _uniform((b, 1, 1), 0.0, self.max_amplitude, generator, dev)
        gain = _uniform((b, c, 1), -1.0, 1.0, generator, dev)
        seconds = torch.arange(t, device=dev, dtype=torch.float32)[None, None, :] / self.fs
        wave = (weight * torch.cos(2 * math.pi * freq * seconds + phase)).sum(dim=1, keepdim=True)
        return x + (amplitude * gain * wave).to(x.dtype)


class PowerlineNoise(Augmentation):
    """Add mains interference: ``freq`` Hz (50 or 60) plus harmonics, sampled at ``fs``.

    Per sample: component k = 1..harmonics at k * freq Hz with its own phase U(0, 2 pi); the
    fundamental has weight 1 and harmonic k >= 2 weight U(0, 1/k) (real interference is dominated
    by the fundamental), weights normalised to sum 1; times an amplitude U(0, max_amplitude) mV
    and a per-lead gain U(-1, 1).

    The sinusoids are evaluated exactly at the sample instants n / fs, i.e. this is what an ADC
    without an anti-aliasing filter would record, and components at or above the Nyquist
    frequency fs / 2 alias. At the paper's fs = 100 Hz with freq = 50: the fundamental sits
    exactly at Nyquist and becomes cos(pi n + phi) = (-1)^n cos(phi), an alternating sequence
    whose size depends on the phase (it vanishes for phi = pi/2); the 100 Hz harmonic becomes
    cos(2 pi n + phi) = cos(phi), a constant offset; 150 Hz is again the alternating sequence.
    With freq = 60 at 100 Hz the components alias to 40, 20 and 20 Hz. Set ``anti_alias=True``
    to drop every component at or above Nyquist, as a recorder with an anti-aliasing filter
    would; at fs = 100 Hz and 50 Hz mains that leaves nothing and the transform adds zero.
    """

    def __init__(self, fs: float = 100.0, freq: float = 50.0, max_amplitude: float = 0.1,
                 harmonics: int = 3, anti_alias: bool = False):
        fs = _number("PowerlineNoise", "fs", fs, 0.0, lo_open=True)
        freq = _number("PowerlineNoise", "freq", freq, 0.0, lo_open=True)
        max_amplitude = _number("PowerlineNoise", "max_amplitude", max_amplitude, 0.0)
        harmonics = _integer("PowerlineNoise", "harmonics", harmonics, 1)
        if not isinstance(anti_alias, bool):
            raise ConfigError(f"PowerlineNoise: 'anti_alias' must be true or false, got {anti_alias!r}")
        super().__init__(fs=fs, freq=freq, max_amplitude=max_amplitude, harmonics=harmonics,
                         anti_alias=anti_alias)
        self.fs, self.freq, self.max_amplitude = fs, freq, max_amplitude
        self.harmonics, self.anti_alias = harmonics, anti_alias

    def _apply(self, x, generator):
        b, c, t = x.shape
        k, dev = self.harmonics, x.device
        phase = _uniform((b, k, 1), 0.0, 2 * math.pi, generator, dev)
        weight = _rand((b, k, 1), generator, dev) / torch.arange(1, k + 1, device=dev)[None, :, None]
        weight[:, 0] = 1.0
        if self.anti_alias:
            kept = torch.tensor([n * self.freq < self.fs / 2 for n in range(1, k + 1)], device=dev)
            weight = weight * kept[None, :, None]
        # clamp: with anti_alias every component can be gone, and the noise is then zero, not NaN
        weight = weight / weight.sum(dim=1, keepdim=True).clamp(min=1e-12)
        amplitude = _uniform((b, 1, 1), 0.0, self.max_amplitude, generator, dev)
        gain = _uniform((b, c, 1), -1.0, 1.0, generator, dev)
        # cycles per sample reduced mod 1 and the sample grid in float64: the phase k f n / fs
        # of a long window is then exact enough that the Nyquist case really gives +-cos(phi)
        cycles = torch.tensor([(n * self.freq / self.fs) % 1.0 for n in range(1, k + 1)],
                              dtype=torch.float64, device=dev)
        n = torch.arange(t, dtype=torch.float64, device=dev)
        angle = (2 * math.pi * torch.remainder(cycles[:, None] * n[None, :], 1.0)).float()
        wave = (weight * torch.cos(angle[None] + phase)).sum(dim=1, keepdim=True)
        return x + (amplitude * gain * wave).to(x.dtype)


class EMNoise(Augmentation):
    """Add electrode-motion-like artefacts: band-limited random noise in one smooth burst.

    Model, per sample: independent white Gaussian noise per lead, band-limited to ``band`` Hz
    (default 1-10 Hz, where electrode motion overlaps the P/QRS/T spectrum; the upper edge is
    capped at Nyquist) by zeroing the other bins of its real FFT; multiplied by one burst
    envelope shared by all leads, a Hann window over a segment of U(burst_fraction) of the
    window at a random position (motion is an event in time; the taper avoids steps); then each
    lead is scaled to peak 1 and multiplied by an amplitude U(0, max_amplitude) mV and a per-lead
    gain U(0, 1), so the added signal is bounded by ``max_amplitude``.

    The reference's EMNoise is electromyographic (muscle) noise, plain white Gaussian noise;
    that is :class:`GaussianNoise` here.
    """

    def __init__(self, fs: float = 100.0, max_amplitude: float = 0.25, band: Sequence[float] = (1.0, 10.0),
                 burst_fraction: Sequence[float] = (0.2, 0.6)):
        fs = _number("EMNoise", "fs", fs, 0.0, lo_open=True)
        max_amplitude = _number("EMNoise", "max_amplitude", max_amplitude, 0.0)
        band = _pair("EMNoise", "band", band, 0.0)
        if band[0] >= fs / 2:
            raise ConfigError(f"EMNoise: 'band' must start below Nyquist ({fs / 2:g} Hz), got {list(band)}")
        burst_fraction = _pair("EMNoise", "burst_fraction", burst_fraction, 0.0, 1.0)
        super().__init__(fs=fs, max_amplitude=max_amplitude, band=band, burst_fraction=burst_fraction)
        self.fs, self.max_amplitude, self.band, self.burst_fraction = fs, max_amplitude, band, burst_fraction

    def _apply(self, x, generator):
        b, c, t = x.shape
        dev = x.device
        white = _randn((b, c, t), generator, dev)
        freqs = torch.fft.rfftfreq(t, d=1.0 / self.fs).to(dev)
        in_band = (freqs >= self.band[0]) & (freqs <= min(self.band[1], self.fs / 2))
        noise = torch.fft.irfft(torch.fft.rfft(white, dim=-1) * in_band, n=t, dim=-1)
        length = _uniform((b, 1, 1), *self.burst_fraction, generator, dev) * t
        start = _rand((b, 1, 1), generator, dev) * (t - length)
        pos = torch.arange(t, device=dev, dtype=torch.float32)[None, None, :]
        phase = ((pos - start) / length.clamp(min=1e-6)).clamp(0.0, 1.0)
        envelope = torch.sin(math.pi * phase) ** 2
        burst = noise * envelope
        burst = burst / burst.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
        amplitude = _uniform((b, 1, 1), 0.0, self.max_amplitude, generator, dev)
        gain = _rand((b, c, 1), generator, dev)
        return x + (amplitude * gain * burst).to(x.dtype)


# --------------------------------------------------------------------------- configuration

#: transforms that can be named in a spec, by class name
TRANSFORMS: dict[str, type[Augmentation]] = {
    cls.__name__: cls
    for cls in (RandomResizedCrop, TimeOut, GaussianNoise, ChannelResize, BaselineWander, PowerlineNoise,
                EMNoise, BaselineShift, DynamicTimeWarp)
}


def _accepted(cls: type[Augmentation]) -> list[str]:
    return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]


def build_augmentation(specs: Sequence[Mapping[str, Any]] | None, fs: float) -> Compose:
    """Build the pipeline described by ``specs`` (None: :data:`PAPER_DEFAULT`; []: identity).

    Each spec is a mapping with ``name`` (a class name from :data:`TRANSFORMS`), the optional
    per-sample probability ``p`` (default 1) and constructor arguments; lists are accepted for
    pairs. ``fs`` is the data's sampling rate and is passed to the transforms that need it; a
    spec may not set ``fs`` itself, since a rate that differs from the data's would silently put
    noise at the wrong frequencies. Problems raise :class:`ConfigError` naming the transform and
    the key.
    """
    fs = _number("augmentations", "fs", fs, 0.0, lo_open=True)
    if specs is None:
        specs = PAPER_DEFAULT
    if isinstance(specs, (Mapping, str, bytes)) or not isinstance(specs, Iterable):
        raise ConfigError(f"augmentations must be a list of {{name: ...}} mappings, got {specs!r}")
    transforms: list[Augmentation] = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            raise ConfigError(f"augmentations[{index}] must be a mapping with a 'name' key, got {spec!r}")
        spec = dict(spec)
        name = spec.pop("name", None)
        if name not in TRANSFORMS:
            raise ConfigError(f"augmentations[{index}]: unknown transform {name!r}; "
                              f"known: {', '.join(sorted(TRANSFORMS))}")
        cls = TRANSFORMS[name]
        p = spec.pop("p", 1.0)
        accepted = _accepted(cls)
        if "fs" in spec:
            raise ConfigError(f"{name}: key 'fs' cannot be set per transform; it is the data's rate ({fs:g} Hz)")
        unknown = sorted(set(spec) - set(accepted))
        if unknown:
            allowed = ", ".join(["p", *[a for a in accepted if a != "fs"]])
            raise ConfigError(f"{name}: unknown parameter {', '.join(repr(k) for k in unknown)} "
                              f"(allowed: {allowed})")
        if "fs" in accepted:
            spec["fs"] = fs
        transform = cls(**spec)
        p = _number(name, "p", p, 0.0, 1.0)
        transforms.append(transform if p >= 1.0 else RandomApply(transform, p))
    return Compose(transforms)
