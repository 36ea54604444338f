"""RandomResizedCrop(warp="reference"): the reference's random sorted-position time warp.

The reference (Mehari & Strodthoff 2022, ``TRandomResizedCrop``) writes a crop of m = round(f*T)
samples to output positions 0, T-1 and m-2 sorted random interior positions and interpolates
linearly in between. The checks rebuild that output independently with ``numpy.interp`` from
the positions the transform chose (recovered from a ramp input, where a value says where it was
read from) and the crop's samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ecg_ray.augment import RandomResizedCrop, build_augmentation
from ecg_ray.errors import ConfigError

B, C, T = 64, 12, 250
JOBS = Path(__file__).resolve().parents[1] / "jobs" / "pretrain"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def ramp(b: int = B, t: int = T) -> torch.Tensor:
    """Each lead holds its own time index, so an output value says where it was read from."""
    return torch.arange(t, dtype=torch.float32).expand(b, C, t).clone()


def noise(b: int = B, t: int = T, seed: int = 11) -> torch.Tensor:
    return torch.randn((b, C, t), generator=gen(seed))


def warp_of(row: torch.Tensor) -> tuple[int, int, np.ndarray]:
    """(crop start, crop length m, assigned output positions) of one ramp row's output (T,).

    Assigned outputs read a crop sample exactly (an integer); the others lie strictly between
    two consecutive crop samples (weights (j - prev) / gap with gap <= T - 1, far from integers).
    """
    values = row.double().numpy()
    assigned = np.flatnonzero(values == np.round(values))
    start, last = int(values[0]), int(values[-1])
    return start, last - start + 1, assigned


def test_first_and_last_outputs_are_the_crops_first_and_last_samples():
    transform = RandomResizedCrop(scale=(0.5, 1.0), warp="reference")
    y_ramp = transform(ramp(), gen(1))
    x = noise()
    y = transform(x, gen(1))  # same seed: same crops and positions, whatever the input
    lengths = []
    for b in range(B):
        start, m, _ = warp_of(y_ramp[b, 0])
        assert 0 <= start and start + m <= T
        assert round(0.5 * T) <= m <= T
        assert torch.equal(y[b, :, 0], x[b, :, start])
        assert torch.equal(y[b, :, -1], x[b, :, start + m - 1])
        lengths.append(m)
    assert len(set(lengths)) > 20  # the crop length really is drawn per sample


def test_output_is_linear_interpolation_between_sorted_assigned_positions():
    transform = RandomResizedCrop(scale=(0.5, 1.0), warp="reference")
    y_ramp = transform(ramp(), gen(2))
    x = noise(seed=12)
    y = transform(x, gen(2))
    j = np.arange(T)
    for b in range(B):
        start, m, assigned = warp_of(y_ramp[b, 0])
        # every crop sample has exactly one output position; 0 and T-1 are among them
        assert len(assigned) == m and assigned[0] == 0 and assigned[-1] == T - 1
        np.testing.assert_array_equal(y_ramp[b, 0, assigned].numpy(), np.arange(start, start + m))
        for c in (0, 5, 11):
            crop = x[b, c, start:start + m].numpy()
            expected = np.interp(j, assigned, crop)
            np.testing.assert_allclose(y[b, c].numpy(), expected, rtol=0, atol=1e-5)
    # all leads share the warp
    assert torch.equal(y_ramp, y_ramp[:, :1].expand_as(y_ramp))


def test_monotone_input_gives_non_decreasing_output_within_the_crop():
    transform = RandomResizedCrop(scale=(0.5, 1.0), warp="reference")
    y = transform(ramp(), gen(3))[:, 0]
    steps = y[:, 1:] - y[:, :-1]
    # sorted positions: strictly increasing, and never more than one crop sample per output step
    assert steps.min() > 0 and steps.max() <= 1 + 1e-6
    # a monotone but curved input (exp) stays monotone too
    curved = torch.exp(ramp() / 50)
    assert (transform(curved, gen(3))[:, :, 1:] - transform(curved, gen(3))[:, :, :-1]).min() > 0
    # every value lies within its crop's range (convex combinations of crop samples)
    x = noise(seed=13)
    out = transform(x, gen(3))
    for b in range(B):
        start, m, _ = warp_of(y[b])
        crop = x[b, :, start:start + m]
        assert (out[b] >= crop.amin(dim=-1, keepdim=True) - 1e-6).all()
        assert (out[b] <= crop.amax(dim=-1, keepdim=True) + 1e-6).all()


@pytest.mark.parametrize("warp", ["reference", "uniform"])
def test_full_scale_is_the_identity(warp):
    x = noise()
    assert torch.equal(RandomResizedCrop(scale=(1.0, 1.0), warp=warp)(x, gen(4)), x)


def test_warp_is_not_a_uniform_stretch():
    # the same crop (start, length) stretched evenly: start + j (m - 1) / (T - 1)
    y = RandomResizedCrop(scale=(0.5, 0.9), warp="reference")(ramp(), gen(5))[:, 0]
    j = torch.arange(T, dtype=torch.float32)
    differs = 0
    for b in range(B):
        start, m, _ = warp_of(y[b])
        uniform = start + j * (m - 1) / (T - 1)
        differs += int((y[b] - uniform).abs().max() > 1.0)
    assert differs >= 0.9 * B
    # and the uniform warp is exactly that stretch (its crop start is fractional, so compare slopes)
    u = RandomResizedCrop(scale=(0.5, 0.9))(ramp(), gen(5))[:, 0]
    steps = u[:, 1:] - u[:, :-1]
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-4)


def test_interior_positions_are_a_uniform_random_subset():
    # fixed crop length m = round(0.6 * 250) = 150: each row assigns 148 of the 248 interior
    # outputs; over 4000 rows each position's frequency must be near 148 / 248 = 0.597
    # (binomial sd 0.0078; 0.04 is five of them), and crop starts must cover 0..T-m
    n, m = 4000, 150
    y = RandomResizedCrop(scale=(0.6, 0.6), warp="reference")(
        torch.arange(T, dtype=torch.float32).expand(n, 1, T).clone(), gen(6))[:, 0].double()
    assigned = y == torch.round(y)
    assert (assigned.sum(dim=-1) == m).all()
    assert assigned[:, 0].all() and assigned[:, -1].all()
    frequency = assigned[:, 1:-1].double().mean(dim=0)
    assert (frequency - (m - 2) / (T - 2)).abs().max() < 0.04
    starts = y[:, 0]
    assert starts.min() == 0 and starts.max() == T - m
    assert ((y[:, -1] - starts) == m - 1).all()


def test_tiny_crops_keep_two_samples_and_short_windows_work():
    # round(0.001 * 250) = 0 samples; the crop is held at 2 so the two fixed ends differ
    y = RandomResizedCrop(scale=(0.001, 0.001), warp="reference")(ramp(8), gen(7))[:, 0]
    assert ((y[:, -1] - y[:, 0]) == 1).all()
    for t in (2, 3, 5):
        x = noise(4, t)
        out = RandomResizedCrop(scale=(0.5, 1.0), warp="reference")(x, gen(8))
        assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_keeps_dtype_and_leaves_the_input_alone(dtype):
    x = noise().to(dtype)
    before = x.clone()
    y = RandomResizedCrop(warp="reference")(x, gen(12))
    assert y.dtype == dtype and y.shape == x.shape and torch.equal(x, before)
    # the positions do not depend on the dtype: the ends match the float32 run's exactly
    y32 = RandomResizedCrop(warp="reference")(x.float(), gen(12))
    assert torch.equal(y[..., [0, -1]].float(), y32[..., [0, -1]])


@pytest.mark.parametrize("device", DEVICES)
def test_seeded_reproducible_and_seed_dependent(device):
    transform = RandomResizedCrop(warp="reference")
    x = noise().to(device)
    a, b, c = transform(x, gen(9, device)), transform(x, gen(9, device)), transform(x, gen(10, device))
    assert a.device == x.device
    assert torch.equal(a, b) and not torch.equal(a, c)
    # built from a config spec it draws the same numbers as built in code
    built = build_augmentation([{"name": "RandomResizedCrop", "scale": [0.5, 1.0], "warp": "reference"}],
                               fs=100)
    assert torch.equal(built(x, gen(9, device)), a)


def test_default_warp_is_uniform():
    x = noise()
    default = build_augmentation([{"name": "RandomResizedCrop"}], fs=100)(x, gen(11))
    assert torch.equal(default, RandomResizedCrop(warp="uniform")(x, gen(11)))
    assert not torch.equal(default, RandomResizedCrop(warp="reference")(x, gen(11)))


@pytest.mark.parametrize("warp", ["bogus", "Reference", True, None, 1])
def test_unknown_warp_is_a_config_error_naming_the_option(warp):
    with pytest.raises(ConfigError, match=r"RandomResizedCrop: 'warp' must be one of uniform, reference"):
        build_augmentation([{"name": "RandomResizedCrop", "warp": warp}], fs=100)
    with pytest.raises(ConfigError, match="'warp'"):
        RandomResizedCrop(warp=warp)


@pytest.mark.parametrize("job", ["simclr", "byol", "swav"])
def test_paper_jobs_use_the_reference_warp(job):
    config = yaml.safe_load((JOBS / f"{job}.yaml").read_text())
    pipeline = build_augmentation(config["augmentations"], fs=100)
    crops = [t for t in pipeline if isinstance(t, RandomResizedCrop)]
    assert len(crops) == 1 and crops[0].warp == "reference" and crops[0].scale == (0.5, 1.0)
