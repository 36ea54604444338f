"""S4D layer: the FFT-convolution kernel against a direct recurrence, causality, bidirectionality, shapes."""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.errors import ConfigError
from ecg_ray.models.s4 import S4DLayer, S4Stack


def recurrence(layer: S4DLayer, u: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """y of the layer's SSM by stepping x_k = dA x_{k-1} + dB u_k, y_k = 2 Re(C x_k) + D u_k in float64.

    The discretisation is written here from the continuous parameters, independently of the layer's
    code: ZOH dA = exp(dt A), dB = (exp(dt A) - 1) / A; bilinear dA = (1 + dt A/2) / (1 - dt A/2),
    dB = dt / (1 - dt A/2); B = 1. ``reverse`` runs the anti-causal kernel (C[1]) over u_>t only.
    """
    H, modes = layer.d_model, layer.d_state // 2
    dt = layer.log_dt.detach().double().exp()[:, None]
    A = torch.complex(-layer.log_neg_real.detach().double().exp(), layer.imag.detach().double()).view(H, modes)
    if layer.discretization == "zoh":
        dA, dB = torch.exp(dt * A), (torch.exp(dt * A) - 1) / A
    else:
        dA, dB = (1 + dt * A / 2) / (1 - dt * A / 2), dt / (1 - dt * A / 2)
    C = torch.view_as_complex(layer.C.detach().double().contiguous())
    u = u.double()
    batch, _, length = u.shape
    y = torch.zeros(batch, H, length, dtype=torch.float64)
    if not reverse:
        x = torch.zeros(batch, H, modes, dtype=torch.complex128)
        for t in range(length):
            x = dA * x + dB * u[:, :, t, None]
            y[:, :, t] = 2 * (C[0] * x).sum(-1).real
        return y + layer.D.detach().double()[:, None] * u
    # anti-causal part: output t sums the future inputs u_{t+1..}, the nearest with kernel lag 0
    x = torch.zeros(batch, H, modes, dtype=torch.complex128)
    for t in range(length - 1, -1, -1):
        y[:, :, t] = 2 * (C[1] * x).sum(-1).real
        x = dA * x + dB * u[:, :, t, None]
    return y


@pytest.mark.parametrize("init", ["lin", "inv"])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_fft_convolution_equals_direct_recurrence(init, discretization):
    torch.manual_seed(0)
    # dt up to 0.5 with S4D-Inv's fast modes makes the kernel oscillate: a stiffer check than dt 0.1
    layer = S4DLayer(6, 8, init=init, discretization=discretization, dt_min=0.01, dt_max=0.5)
    u = torch.randn(3, 6, 37)
    with torch.no_grad():
        y = layer.ssm(u)
    torch.testing.assert_close(y.double(), recurrence(layer, u), rtol=1e-5, atol=1e-5)


def test_bidirectional_is_causal_plus_anticausal_recurrence():
    torch.manual_seed(1)
    layer = S4DLayer(4, 6, bidirectional=True, dt_min=0.05, dt_max=0.3)
    u = torch.randn(2, 4, 29)
    with torch.no_grad():
        y = layer.ssm(u)
    expected = recurrence(layer, u) + recurrence(layer, u, reverse=True)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


def test_init_values():
    lin = S4DLayer(2, 8, init="lin")
    inv = S4DLayer(2, 8, init="inv")
    n = torch.arange(4, dtype=torch.float32)
    torch.testing.assert_close(lin.imag.view(2, 4)[1], math.pi * n)
    torch.testing.assert_close(inv.imag.view(2, 4)[0], 8 / math.pi * (8 / (2 * n + 1) - 1))
    torch.testing.assert_close(lin.log_neg_real.exp(), torch.full((8,), 0.5))  # Re A = -1/2
    dt = S4DLayer(1000, 2, dt_min=0.001, dt_max=0.1).log_dt.exp()
    assert 0.001 <= dt.min() and dt.max() <= 0.1
    assert dt.log().mean().item() == pytest.approx((math.log(0.001) + math.log(0.1)) / 2, abs=0.1)  # log-uniform


def _changed_after(x: torch.Tensor, t: int) -> torch.Tensor:
    y = x.clone()
    y[:, t + 1:] = torch.randn_like(y[:, t + 1:])
    return y


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_stack_is_causal(norm):
    torch.manual_seed(2)
    stack = S4Stack(16, layers=3, d_state=8, dropout=0.1, norm=norm).eval()  # BatchNorm: running stats
    x = torch.randn(2, 50, 16)
    t = 20
    with torch.no_grad():
        a, b = stack(x), stack(_changed_after(x, t))
    torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_bidirectional_stack_sees_both_directions():
    torch.manual_seed(3)
    stack = S4Stack(16, layers=2, d_state=8, dropout=0.0, bidirectional=True).eval()
    x = torch.randn(2, 40, 16)
    with torch.no_grad():
        base = stack(x)
        future = stack(_changed_after(x, 20))
        past = x.clone()
        past[:, :10] = torch.randn_like(past[:, :10])
        past = stack(past)
    assert not torch.allclose(base[:, :21], future[:, :21])  # earlier outputs see later inputs
    assert not torch.allclose(base[:, 30:], past[:, 30:])  # and later outputs earlier inputs


@pytest.mark.parametrize("length", [1, 7, 33, 101])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_shapes_for_odd_lengths(length, bidirectional):
    stack = S4Stack(8, layers=2, d_state=4, dropout=0.0, bidirectional=bidirectional)
    assert stack(torch.randn(3, length, 8)).shape == (3, length, 8)


def test_gradients_finite_for_every_parameter():
    torch.manual_seed(4)
    stack = S4Stack(8, layers=2, d_state=8, dropout=0.1, bidirectional=True).train()
    stack(torch.randn(2, 64, 8)).pow(2).mean().backward()
    for name, param in stack.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_runs_under_bf16_autocast_in_fp32_ffts():
    stack = S4Stack(8, layers=1, d_state=4, dropout=0.0).eval()
    x = torch.randn(2, 30, 8)
    with torch.no_grad():
        reference = stack(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = stack(x)
    torch.testing.assert_close(half.float(), reference, rtol=0.05, atol=0.05)  # bf16 Linear only


def test_ssm_dynamics_get_no_weight_decay_and_a_capped_lr():
    """S4's optimizer rule: A and dt at min(lr, 0.001) without weight decay; C, D, the output layer as usual."""
    from ecg_ray.optim import build_optimizer, parameter_groups, warmup_cosine

    layer = S4DLayer(4, 8)
    groups = {g["name"]: g for g in parameter_groups(layer, 0.01)}
    assert set(groups) == {"decay", "no_decay", "lr_cap=0.001"}
    capped = {id(p) for p in groups["lr_cap=0.001"]["params"]}
    assert capped == {id(layer.log_dt), id(layer.log_neg_real), id(layer.imag)}
    assert groups["lr_cap=0.001"]["weight_decay"] == 0.0
    assert id(layer.C) in {id(p) for p in groups["decay"]["params"]}
    assert id(layer.D) in {id(p) for p in groups["no_decay"]["params"]}
    for lr, expected in ((3e-3, 1e-3), (1e-4, 1e-4)):  # ECG-CPC's lr 3e-3 is capped; a lower one is kept
        optimizer = build_optimizer(layer, "adam", lr=lr, weight_decay=1e-3)
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        assert lrs == {"decay": lr, "no_decay": lr, "lr_cap=0.001": expected}
    # the schedule scales the capped group like the others
    scheduler = warmup_cosine(optimizer, warmup_steps=2, total_steps=10)
    optimizer.step()
    scheduler.step()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["lr_cap=0.001"] == pytest.approx(lrs["decay"])  # both at 1e-4 x the same factor
    assert S4DLayer(4, 8, ssm_lr=None).log_dt.__dict__.get("_lr_cap") is None  # opt out


@pytest.mark.parametrize("options", [{"d_state": 5}, {"init": "legs"}, {"discretization": "euler"},
                                     {"dt_min": 0.2, "dt_max": 0.1}])
def test_bad_options_are_config_errors(options):
    arguments = {"d_model": 4, "d_state": 8, **options}
    with pytest.raises(ConfigError):
        S4DLayer(arguments.pop("d_model"), arguments.pop("d_state"), **arguments)
