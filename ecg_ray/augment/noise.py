"""Additive noise models: white noise, baseline shift and wander, mains interference, motion bursts.

Amplitudes are in the store's unit, millivolts. For the additive models with ``max_amplitude``
it is a hard bound: the added signal never exceeds it in absolute value (per-sample amplitudes
are drawn from U(0, max_amplitude), per-lead gains from U(-1, 1) or U(0, 1)). Everything is
broadcast arithmetic over the batch (and one FFT for :class:`EMNoise`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ecg_ray.errors import ConfigError

from .base import Augmentation
from .checks import _integer, _number, _pair
from .draws import _rand, _randn, _uniform


class GaussianNoise(Augmentation):
    """Add white Gaussian noise with standard deviation ``sigma`` (mV), independent per value."""

    def __init__(self, sigma: float = 0.005):
        sigma = _number("GaussianNoise", "sigma", sigma, 0.0)
        super().__init__(sigma=sigma)
        self.sigma = sigma

    def _apply(self, x, generator):
        return x + (self.sigma * _randn(x.shape, generator, x.device)).to(x.dtype)


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
        weight[:, 0].fill_(1.0)  # fill_, not "= 1.0", which would build a host tensor each step
        # harmonic numbers made on the device: a torch.tensor(list) here would be a blocking host copy per step
        harmonic = torch.arange(1, k + 1, dtype=torch.float64, device=dev)
        if self.anti_alias:
            kept = harmonic * self.freq < self.fs / 2
            weight = weight * kept[None, :, None]
        # clamp: with anti_alias every component can be gone, and the noise is then zero, not NaN
        weight = weight / weight.sum(dim=1, keepdim=True).clamp(min=1e-12)
        amplitude = _uniform((b, 1, 1), 0.0, self.max_amplitude, generator, dev)
        gain = _uniform((b, c, 1), -1.0, 1.0, generator, dev)
        # cycles per sample reduced mod 1 and the sample grid in float64: the phase k f n / fs
        # of a long window is then exact enough that the Nyquist case really gives +-cos(phi)
        # (the same float64 operations as Python's (n * freq / fs) % 1.0)
        cycles = torch.remainder(harmonic * self.freq / self.fs, 1.0)
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
        freqs = torch.fft.rfftfreq(t, d=1.0 / self.fs, device=dev)  # made on the device, no host copy
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
