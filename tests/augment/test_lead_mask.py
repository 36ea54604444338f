"""RandomLeadMask: the mask's distribution against its definition, exact zeros, seeds, the config spec."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecg_ray.augment import RandomApply, RandomLeadMask, build_augmentation
from ecg_ray.errors import ConfigError

C, T = 12, 40


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def signal(b: int, dtype=torch.float32, t: int = T) -> torch.Tensor:
    # no zero anywhere (and negative values): a zero in the output can only be a masked lead
    x = torch.randn((b, C, t), generator=gen(99), dtype=torch.float32)
    return (torch.sign(x) * (x.abs() + 0.1)).to(dtype)


def masked_leads(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C) bool: which leads came out all zero; asserts every other lead is unchanged bit for bit."""
    zero = (y == 0).all(dim=2)
    assert torch.equal(torch.where(zero[:, :, None], x, y), x), "a kept lead was changed"
    assert not torch.signbit(y[zero]).any(), "masked values must be +0.0"
    return zero


def binomial_with_rescue(p: float, c: int = C) -> np.ndarray:
    """P(k leads masked), k = 0..c: Binomial(c, p) with the all-masked mass moved to c - 1 (one lead rescued)."""
    probs = np.array([math.comb(c, k) * p ** k * (1 - p) ** (c - k) for k in range(c + 1)])
    probs[c - 1] += probs[c]
    probs[c] = 0.0
    return probs


@pytest.mark.parametrize("p", [0.5, 0.9])
def test_mask_statistics_match_the_definition(p):
    n = 40_000
    x = signal(n, t=4)  # the statistics are per lead: a few samples per lead keep it fast
    masked = masked_leads(x, RandomLeadMask(mask_prob=p)(x, gen(1)))
    counts = masked.sum(dim=1).numpy()
    assert counts.max() <= C - 1, "a sample lost every lead"
    # each lead: masked with probability p - p^C / C (the rescued lead is uniform)
    per_lead = masked.float().mean(dim=0).numpy()
    expected = p - p ** C / C
    sigma = math.sqrt(expected * (1 - expected) / n)
    assert np.abs(per_lead - expected).max() < 5 * sigma, (per_lead, expected)
    # the number of masked leads per sample: chi-square over the bins with >= 20 expected samples
    probs = binomial_with_rescue(p)
    observed = np.bincount(counts, minlength=C + 1)
    bins = probs * n >= 20
    chi2 = float((((observed - probs * n) ** 2) / np.maximum(probs * n, 1e-12))[bins].sum())
    dof = int(bins.sum()) - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof), (chi2, dof, observed, np.round(probs * n))
    # leads are masked independently: two leads together as often as p_lead^2 (away from the rescue's mass)
    if p == 0.5:
        both = (masked[:, 0] & masked[:, 7]).float().mean().item()
        assert abs(both - expected ** 2) < 5 * math.sqrt(expected ** 2 * (1 - expected ** 2) / n)


def test_mask_prob_one_keeps_exactly_one_lead_uniformly():
    n = 24_000
    x = signal(n, t=4)
    masked = masked_leads(x, RandomLeadMask(mask_prob=1.0)(x, gen(2)))
    assert (masked.sum(dim=1) == C - 1).all()
    kept = (~masked).float().argmax(dim=1)
    share = np.bincount(kept.numpy(), minlength=C) / n
    assert np.abs(share - 1 / C).max() < 5 * math.sqrt((1 / C) * (1 - 1 / C) / n)


def test_mask_prob_zero_is_the_identity():
    x = signal(64)
    assert torch.equal(RandomLeadMask(mask_prob=0.0)(x, gen()), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_device_input_kept_and_exact_zeros(dtype):
    x = signal(256, dtype)
    before = x.clone()
    y = RandomLeadMask()(x, gen(3))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.equal(x, before), "the input must not be modified"
    masked = masked_leads(x, y)
    assert 0 < masked.float().mean().item() < 1


def test_same_seed_same_mask_other_seed_other_mask():
    x = signal(128)
    transform = RandomLeadMask(mask_prob=0.5)
    a, b, c = transform(x, gen(7)), transform(x, gen(7)), transform(x, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the mask is drawn per sample: the same record repeated over the batch is masked differently
    same = signal(1).expand(32, C, T).contiguous()
    rows = transform(same, gen(4))
    assert len({tuple((rows[k] == 0).all(dim=1).tolist()) for k in range(32)}) > 10


def test_spec_p_is_the_per_sample_probability():
    # p: a sample is masked at all with probability p; then each lead with mask_prob (ECG-FM: p 1, mask_prob 0.5)
    augment = build_augmentation([{"name": "RandomLeadMask", "p": 0.5, "mask_prob": 0.5}], fs=100)
    (transform,) = list(augment)
    assert isinstance(transform, RandomApply) and transform.transform.mask_prob == 0.5
    n = 20_000
    x = signal(n, t=4)
    touched = masked_leads(x, augment(x, gen(5))).any(dim=1).float().mean().item()
    expected = 0.5 * (1 - 0.5 ** C)
    assert abs(touched - expected) < 5 * math.sqrt(expected * (1 - expected) / n)
    default = build_augmentation([{"name": "RandomLeadMask"}], fs=100)
    assert isinstance(list(default)[0], RandomLeadMask) and list(default)[0].mask_prob == 0.5


@pytest.mark.parametrize("spec,message", [
    ({"name": "RandomLeadMask", "mask_prob": 1.5}, "'mask_prob' must satisfy"),
    ({"name": "RandomLeadMask", "mask_prob": "half"}, "'mask_prob' must be a finite number"),
    ({"name": "RandomLeadMask", "leads": 3}, "unknown parameter 'leads'"),
    ({"name": "RandomLeadMask", "p": 2}, "'p' must satisfy"),
])
def test_bad_arguments_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_augmentation([spec], fs=100)
