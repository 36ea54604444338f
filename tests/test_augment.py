"""Batched ECG augmentations: shape/dtype/device, seeded determinism, and what each one does."""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.augment import (
    PAPER_DEFAULT,
    TRANSFORMS,
    BaselineShift,
    BaselineWander,
    ChannelResize,
    Compose,
    DynamicTimeWarp,
    EMNoise,
    GaussianNoise,
    PowerlineNoise,
    RandomApply,
    RandomResizedCrop,
    TimeOut,
    build_augmentation,
)
from ecg_ray.errors import ConfigError

B, C, T = 8, 12, 250


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def batch(seed: int = 123, shape=(B, C, T), dtype=torch.float32, device="cpu") -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=dtype).to(device)


def ramp(b: int = B, t: int = T) -> torch.Tensor:
    """Each lead holds its own time index, so an output value says where it was read from."""
    return torch.arange(t, dtype=torch.float32).expand(b, C, t).clone()


def runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of the True runs of a 1-D bool tensor."""
    out, start = [], None
    for i, v in enumerate(mask.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i - start))
            start = None
    return out


ALL = sorted(TRANSFORMS)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --------------------------------------------------------------------------- generic contract

@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("device", DEVICES)
def test_keeps_shape_dtype_device_and_input(name, dtype, device):
    x = batch(dtype=dtype, device=device)
    before = x.clone()
    y = TRANSFORMS[name]()(x, gen(device=device))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert torch.equal(x, before), "the input must not be modified"
    assert not torch.equal(y, x), f"{name} with defaults changed nothing"


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output_other_seed_differs(name):
    transform = TRANSFORMS[name]()
    x = batch()
    a, b, c = transform(x, gen(1)), transform(x, gen(1)), transform(x, gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", ALL)
def test_parameters_differ_per_sample(name):
    # the same record repeated over the batch must come out differently per row
    x = batch(shape=(1, C, T)).expand(6, C, T).contiguous()
    y = TRANSFORMS[name]()(x, gen(3))
    assert not torch.equal(y[0], y[1])


def test_rejects_non_batched_input():
    with pytest.raises(ValueError):
        TimeOut()(torch.zeros(C, T), gen())
    with pytest.raises(ValueError):
        TimeOut()(torch.zeros(B, C, T, dtype=torch.int64), gen())


# --------------------------------------------------------------------------- time-axis transforms

def test_random_resized_crop_full_scale_is_identity():
    x = batch()
    assert torch.equal(RandomResizedCrop(scale=(1.0, 1.0))(x, gen()), x)


def test_random_resized_crop_reads_a_contiguous_fraction_in_range():
    y = RandomResizedCrop(scale=(0.5, 1.0))(ramp(64), gen(5))
    assert torch.allclose(y, y[:, :1, :].expand_as(y))  # same crop in every lead
    diffs = y[:, 0, 1:] - y[:, 0, :-1]
    # a linear ramp stays linear: constant slope = crop length / window length
    assert torch.allclose(diffs, diffs[:, :1].expand_as(diffs), atol=1e-4)
    covered = (y[:, 0, -1] - y[:, 0, 0] + 1) / T
    assert covered.min() >= 0.5 - 1e-4 and covered.max() <= 1.0 + 1e-4
    assert covered.max() - covered.min() > 0.1  # fractions really vary
    assert y.min() >= 0 and y.max() <= T - 1


def test_timeout_zeroes_one_contiguous_run_in_all_leads():
    x = batch(shape=(32, C, T)) + 10.0  # no natural zeros
    y = TimeOut(fraction=(0.2, 0.4))(x, gen(7))
    lengths = []
    for row in y:
        zero = row == 0
        assert torch.equal(zero, zero[:1].expand_as(zero)), "every lead is zeroed at the same times"
        found = runs(zero[0])
        assert len(found) == 1
        lengths.append(found[0][1])
        assert torch.equal(row[:, ~zero[0]], x[len(lengths) - 1][:, ~zero[0]])
    assert min(lengths) >= round(0.2 * T) and max(lengths) <= round(0.4 * T)
    assert len(set(lengths)) > 1


def test_dynamic_time_warp_radius_zero_is_identity():
    x = batch()
    assert torch.equal(DynamicTimeWarp(radius=0)(x, gen()), x)


def test_dynamic_time_warp_is_monotonic_bounded_and_keeps_the_ends():
    x = ramp(32)
    y = DynamicTimeWarp(warps=3, radius=10)(x, gen(4))
    assert torch.equal(y[..., 0], x[..., 0]) and torch.equal(y[..., -1], x[..., -1])
    # on a ramp the output is the warp path itself
    path = y[:, 0]
    assert (path[:, 1:] - path[:, :-1] >= -1e-5).all()
    shift = (path - torch.arange(T)).abs().amax(dim=-1)
    assert shift.max() <= 10 + 1e-4 and shift.min() > 1.0
    other = batch()
    warped = DynamicTimeWarp()(other, gen(4))
    assert torch.equal(warped[..., 0], other[..., 0]) and torch.equal(warped[..., -1], other[..., -1])


# --------------------------------------------------------------------------- amplitude transforms

def test_channel_resize_scales_each_lead_by_a_constant_in_range():
    x = batch(shape=(16, C, T)).abs() + 0.5
    y = ChannelResize()(x, gen(8))
    factor = y / x
    assert torch.allclose(factor, factor[..., :1].expand_as(factor), rtol=1e-5)
    f = factor[..., 0]
    assert f.min() >= 0.5 - 1e-6 and f.max() <= 2.0 + 1e-6
    assert f.std() > 0.1


def test_gaussian_noise_std_is_sigma():
    x = torch.zeros(64, C, 1000)
    noise = GaussianNoise(sigma=0.005)(x, gen(9))
    assert noise.mean().abs() < 1e-4
    assert noise.std().item() == pytest.approx(0.005, rel=0.02)


def test_baseline_shift_adds_one_constant_offset_per_lead_over_one_segment():
    x = torch.zeros(32, C, T)
    y = BaselineShift(max_amplitude=0.5, max_fraction=0.2)(x, gen(10))
    for row in y:
        changed = (row != 0).any(dim=0)
        found = runs(changed)
        assert len(found) == 1
        start, length = found[0]
        assert 1 <= length <= round(0.2 * T)
        seg = row[:, start:start + length]
        assert torch.equal(seg, seg[:, :1].expand_as(seg))  # a step, exactly constant
        assert seg.abs().max() <= 0.5
    # on real data the difference is that same step (up to float rounding of x + offset)
    x = batch()
    g = gen(10)
    y = BaselineShift()(x, g)
    step = BaselineShift()(torch.zeros_like(x), gen(10))
    assert torch.allclose(y - x, step, atol=1e-6)


def test_baseline_wander_is_slow_and_bounded():
    x = torch.zeros(16, C, 1000)
    y = BaselineWander(fs=100, max_amplitude=0.05, max_freq=0.5)(x, gen(11))
    assert y.abs().max() <= 0.05 + 1e-7 and y.abs().max() > 0
    spectrum = torch.fft.rfft(y, dim=-1).abs() ** 2
    freqs = torch.fft.rfftfreq(1000, d=0.01)
    # leakage aside, essentially all power sits below ~1 Hz
    assert spectrum[..., freqs > 2.0].sum() < 0.01 * spectrum.sum()


def test_powerline_noise_peaks_at_mains_frequency():
    fs, n = 500, 1000
    y = PowerlineNoise(fs=fs, freq=50.0, max_amplitude=0.1)(torch.zeros(8, C, n), gen(12))
    assert y.abs().max() <= 0.1 + 1e-7
    spectrum = (torch.fft.rfft(y, dim=-1).abs() ** 2).sum(dim=(0, 1))
    freqs = torch.fft.rfftfreq(n, d=1 / fs)
    assert freqs[spectrum.argmax()] == pytest.approx(50.0)
    harmonics = spectrum[(freqs == 100) | (freqs == 150)].sum()
    assert harmonics > 0 and spectrum[(freqs - 50).abs() > 1].sum() == pytest.approx(harmonics.item(), rel=1e-3)


def test_powerline_noise_60hz_at_500hz():
    fs, n = 500, 1000
    y = PowerlineNoise(fs=fs, freq=60.0, harmonics=1)(torch.zeros(4, C, n), gen(13))
    spectrum = (torch.fft.rfft(y, dim=-1).abs() ** 2).sum(dim=(0, 1))
    assert torch.fft.rfftfreq(n, d=1 / fs)[spectrum.argmax()] == pytest.approx(60.0)


def test_powerline_noise_aliases_at_100hz_as_documented():
    # 50 Hz is Nyquist: (-1)^n cos(phi); 100 Hz folds to a constant; so the period is 2 samples
    y = PowerlineNoise(fs=100, freq=50.0)(torch.zeros(4, C, T), gen(14))
    assert torch.allclose(y[..., 2:], y[..., :-2], atol=1e-6)
    assert y.abs().max() > 0
    # 60 Hz at 100 Hz folds to 40 Hz
    y = PowerlineNoise(fs=100, freq=60.0, harmonics=1)(torch.zeros(4, C, 1000), gen(15))
    spectrum = (torch.fft.rfft(y, dim=-1).abs() ** 2).sum(dim=(0, 1))
    assert torch.fft.rfftfreq(1000, d=0.01)[spectrum.argmax()] == pytest.approx(40.0)
    # with an anti-aliasing filter nothing of 50 Hz mains survives at 100 Hz
    x = batch()
    assert torch.equal(PowerlineNoise(fs=100, anti_alias=True)(x, gen()), x)


def test_em_noise_is_a_bounded_band_limited_burst():
    fs, n = 100, 1000
    y = EMNoise(fs=fs, max_amplitude=0.25)(torch.zeros(16, C, n), gen(16))
    assert y.abs().max() <= 0.25 + 1e-6 and y.abs().max() > 0
    for row in y:
        active = (row.abs() > 1e-9).any(dim=0)
        assert len(runs(active)) == 1  # one burst, shared by the leads
        assert active.sum() < n  # quiet outside it
    freqs = torch.fft.rfftfreq(n, d=1 / fs)
    spectrum = (torch.fft.rfft(y, dim=-1).abs() ** 2).sum(dim=(0, 1))
    assert spectrum[freqs > 20].sum() < 0.05 * spectrum.sum()


# --------------------------------------------------------------------------- composition and config

def test_paper_default_pipeline():
    pipeline = build_augmentation(None, fs=100)
    assert [type(t).__name__ for t in pipeline] == [s["name"] for s in PAPER_DEFAULT]
    assert pipeline.transforms[0].scale == (0.5, 1.0) and pipeline.transforms[1].fraction == (0.2, 0.4)
    x = batch()
    assert torch.equal(pipeline(x, gen(1)), pipeline(x, gen(1)))


def test_empty_pipeline_is_identity():
    x = batch()
    y = build_augmentation([], fs=100)(x, gen())
    assert torch.equal(y, x) and y is not x


def test_build_passes_fs_and_parameters():
    pipeline = build_augmentation(
        [{"name": "PowerlineNoise", "freq": 60}, {"name": "RandomResizedCrop", "scale": [0.8, 1.0]}], fs=500)
    assert pipeline.transforms[0].fs == 500.0 and pipeline.transforms[0].freq == 60.0
    assert pipeline.transforms[1].scale == (0.8, 1.0)


def test_probability_zero_skips_and_one_applies():
    x = batch()
    skipped = build_augmentation([{"name": "GaussianNoise", "p": 0.0}], fs=100)
    assert torch.equal(skipped(x, gen()), x)
    always = build_augmentation([{"name": "GaussianNoise", "p": 1.0}], fs=100)
    assert (always(x, gen()) != x).all()


def test_probability_applies_per_sample():
    x = batch(shape=(400, C, 50))
    y = RandomApply(GaussianNoise(), p=0.3)(x, gen(17))
    changed = (y != x).flatten(1).any(dim=1)
    untouched = ~changed
    assert torch.equal(y[untouched], x[untouched])
    assert 0.2 < changed.float().mean() < 0.4


def test_compose_applies_in_order():
    x = batch()
    g1, g2 = gen(18), gen(18)
    composed = Compose([ChannelResize(), TimeOut()])(x, g1)
    manual = TimeOut()(ChannelResize()(x, g2), g2)
    assert torch.equal(composed, manual)


@pytest.mark.parametrize(
    ("specs", "words"),
    [
        ([{"name": "RandomResizedCrop", "scales": [0.5, 1.0]}], ["RandomResizedCrop", "'scales'"]),
        ([{"name": "TimeOut", "fraction": [0.4, 0.2]}], ["TimeOut", "'fraction'"]),
        ([{"name": "GaussianNoise", "sigma": -1}], ["GaussianNoise", "'sigma'"]),
        ([{"name": "GaussianNoise", "p": 1.5}], ["GaussianNoise", "'p'"]),
        ([{"name": "PowerlineNoise", "fs": 500}], ["PowerlineNoise", "'fs'"]),
        ([{"name": "Mixup"}], ["Mixup", "RandomResizedCrop"]),
        ([{"scale": [0.5, 1.0]}], ["augmentations[0]", "None"]),
        (["TimeOut"], ["augmentations[0]"]),
        ({"name": "TimeOut"}, ["list"]),
    ],
)
def test_build_errors_name_the_transform_and_key(specs, words):
    with pytest.raises(ConfigError) as err:
        build_augmentation(specs, fs=100)
    for word in words:
        assert word in str(err.value)


def test_constructor_errors():
    with pytest.raises(ConfigError, match="scale"):
        RandomResizedCrop(scale=(0.0, 1.0))
    with pytest.raises(ConfigError, match="max_freq"):
        BaselineWander(fs=100, max_freq=60)
    with pytest.raises(ConfigError, match="warps"):
        DynamicTimeWarp(warps=0)
    with pytest.raises(ConfigError, match="log_range"):
        ChannelResize(log_range=(math.log(2), math.log(0.5)))
    with pytest.raises(ConfigError, match="Nyquist"):
        EMNoise(fs=100, band=(60, 80))


def test_generator_on_another_device_than_the_batch():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = batch(device="cuda")
    y = build_augmentation(None, fs=100)(x, gen(0))
    z = build_augmentation(None, fs=100)(x.cpu(), gen(0))
    assert y.device.type == "cuda" and torch.allclose(y.cpu(), z, atol=1e-5)


def _host_data_ops(name: str, params: dict, device: str) -> list[str]:
    """Ops of one augmentation step that bring host data in: tensors built from Python lists
    (``lift_fresh``) or inputs that live off ``device`` (a meta batch makes any CPU-made tensor show)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class HostData(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.found = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            inputs = [t for t in tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor)]
            if "lift_fresh" in str(func) or any(t.device.type != device for t in inputs):
                self.found.append(str(func))
            return func(*args, **(kwargs or {}))

    augment = build_augmentation([{"name": name, **params}], fs=100)
    with HostData() as mode:
        augment(torch.zeros(4, 12, 250, device=device), None)
    return mode.found


@pytest.mark.parametrize("name,params", [(n, {}) for n in TRANSFORMS] + [("PowerlineNoise", {"anti_alias": True})])
def test_a_step_copies_nothing_from_the_host(name, params):
    """On a GPU a tensor made from host data is a blocking copy every step: everything is made on the batch's device."""
    assert _host_data_ops(name, params, "cpu") == []
    assert _host_data_ops(name, params, "meta") == []
