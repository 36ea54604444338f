"""Parameter groups, LARS, optimizer factory and the warm-up + cosine schedule."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from torch import nn

from ecg_ray.errors import ConfigError
from ecg_ray.optim import LARS, build_optimizer, parameter_groups, warmup_cosine


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(12, 8, 5, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Conv1d(8, 8, 3), nn.GroupNorm(2, 8),
        nn.Flatten(), nn.Linear(8 * 10, 16), nn.ReLU(), nn.Linear(16, 3),
    )


class WithMatrixNorm(nn.Module):
    """A LayerNorm over two dims has a 2-D weight: it must still be excluded from decay."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.norm = nn.LayerNorm([2, 4])
        self.temperature = nn.Parameter(torch.tensor(0.5))
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)

    def forward(self, x):  # pragma: no cover - not used
        return self.norm(self.fc(x).view(-1, 2, 4))


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_groups_exclude_biases_and_norm_layers_from_decay():
    net = small_net()
    groups = parameter_groups(net, weight_decay=0.1, lr=0.5)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert no_decay["lars_exclude"] is True and decay["lars_exclude"] is False
    assert decay["lr"] == no_decay["lr"] == 0.5
    expected_decay = {id(net[0].weight), id(net[3].weight), id(net[6].weight), id(net[8].weight)}
    assert ids(decay["params"]) == expected_decay
    for module in (net[1], net[4]):  # BatchNorm, GroupNorm
        assert ids(module.parameters()) <= ids(no_decay["params"])
    for linear in (net[3], net[6], net[8]):
        assert id(linear.bias) in ids(no_decay["params"])
    assert ids(decay["params"]) | ids(no_decay["params"]) == ids(net.parameters())


def test_groups_handle_nd_norm_weights_scalars_frozen_and_shared():
    model = WithMatrixNorm()
    decay, no_decay = parameter_groups(model, weight_decay=1e-3)
    assert ids(decay["params"]) == {id(model.fc.weight)}
    assert {id(model.norm.weight), id(model.norm.bias), id(model.temperature), id(model.fc.bias)} == ids(
        no_decay["params"])
    shared = nn.Linear(4, 4)
    tied = nn.Sequential(shared, shared)
    (decay,) = [g for g in parameter_groups(tied, 0.1) if g["name"] == "decay"]
    assert len(decay["params"]) == 1
    assert "lr" not in decay


def test_build_optimizer_uses_groups_and_names():
    net = small_net()
    opt = build_optimizer(net, "AdamW", lr=1e-3, weight_decay=0.05, betas=(0.8, 0.9))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert isinstance(build_optimizer(net, "adam", lr=1e-3, weight_decay=0), torch.optim.Adam)
    sgd = build_optimizer(net, "sgd", lr=0.1, weight_decay=0, momentum=0.5)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5
    lars = build_optimizer(net, "lars", lr=1.0, weight_decay=1e-6)
    assert isinstance(lars, LARS) and [g["lars_exclude"] for g in lars.param_groups] == [False, True]
    plain = build_optimizer(net.parameters(), "adamw", lr=1e-3, weight_decay=0.1)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["weight_decay"] == 0.1


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"name": "rmsprop"}, "rmsprop"),
    ({"name": "adamw", "lr": 0}, "lr"),
    ({"name": "adamw", "weight_decay": -1}, "weight_decay"),
    ({"name": "adamw", "betas": (0.9,)}, "betas"),
])
def test_build_optimizer_errors(kwargs, word):
    kwargs = {"lr": 1e-3, "weight_decay": 0.0, **kwargs}
    with pytest.raises(ConfigError, match=word):
        build_optimizer(small_net(), **kwargs)


def test_lars_step_matches_hand_computation():
    w0 = torch.tensor([3.0, -4.0])  # ||w|| = 5
    bias0 = torch.tensor([1.0, 1.0])
    g = torch.tensor([0.6, 0.8])  # ||g|| = 1
    w = nn.Parameter(w0.clone())
    bias = nn.Parameter(bias0.clone())
    lr, eta, wd, momentum = 0.5, 0.01, 0.1, 0.9
    opt = LARS([{"params": [w]}, {"params": [bias], "weight_decay": 0.0, "lars_exclude": True}],
               lr=lr, momentum=momentum, weight_decay=wd, eta=eta)
    w.grad, bias.grad = g.clone(), g.clone()
    opt.step()
    trust = eta * 5.0 / (1.0 + wd * 5.0)
    step1 = lr * trust * (g + wd * w0)
    assert torch.allclose(w.detach(), w0 - step1, atol=1e-7)
    assert torch.allclose(bias.detach(), bias0 - lr * g, atol=1e-7)  # excluded: plain momentum SGD
    # second step: momentum carries the first update, trust recomputed from the new weights
    w1 = w.detach().clone()
    w.grad = g.clone()
    opt.step()
    trust2 = eta * w1.norm() / (g.norm() + wd * w1.norm())
    expected = w1 - (momentum * step1 + lr * trust2 * (g + wd * w1))
    assert torch.allclose(w.detach(), expected, atol=1e-7)


def test_lars_zero_weight_uses_trust_one():
    w = nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=0.1, momentum=0.0)
    w.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((3,), -0.1))


def test_lars_reduces_a_quadratic_loss():
    torch.manual_seed(0)
    target = torch.randn(8, 8)
    model = nn.Linear(8, 8)
    opt = build_optimizer(model, "lars", lr=5.0, weight_decay=0.0, momentum=0.9, eta=0.02)
    x = torch.randn(64, 8)

    def loss_fn():
        return ((model(x) - x @ target) ** 2).mean()

    first = loss_fn().item()
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < 0.1 * first


def make_sched(warmup=10, total=110, min_ratio=0.1, schedule="cosine", lr=0.4):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    return opt, warmup_cosine(opt, warmup, total, min_lr_ratio=min_ratio, schedule=schedule)


def lrs(opt, sched, steps):
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_values():
    opt, sched = make_sched()
    values = lrs(opt, sched, 131)
    assert values[0] == pytest.approx(0.4 / 11)  # small but not a wasted zero step
    assert values[4] == pytest.approx(0.4 * 5 / 11)  # mid warm-up: linear
    assert values[10] == pytest.approx(0.4)  # end of warm-up: the base lr
    assert all(a < b for a, b in zip(values[:10], values[1:11], strict=True))
    mid = 0.04 + (0.4 - 0.04) * 0.5 * (1 + math.cos(math.pi * 0.5))
    assert values[60] == pytest.approx(mid)
    assert values[110] == pytest.approx(0.04)  # end: min_lr_ratio * lr, and it stays there
    assert values[130] == pytest.approx(0.04)
    assert all(a >= b - 1e-12 for a, b in zip(values[10:110], values[11:111], strict=True))


def test_constant_schedule_and_no_warmup():
    opt, sched = make_sched(warmup=4, total=20, schedule="constant")
    values = lrs(opt, sched, 25)
    assert values[3] == pytest.approx(0.4 * 4 / 5) and all(v == pytest.approx(0.4) for v in values[4:])
    opt, sched = make_sched(warmup=0, total=10, min_ratio=0.0)
    values = lrs(opt, sched, 11)
    assert values[0] == pytest.approx(0.4) and values[10] == pytest.approx(0.0, abs=1e-12)


def test_schedule_keeps_group_ratios_and_survives_state_dict():
    net = small_net()
    opt = build_optimizer(net, "adamw", lr=1e-2, weight_decay=0.1)
    opt.param_groups[1]["lr"] = 1e-3
    sched = warmup_cosine(opt, 5, 50)
    for _ in range(5):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-2, 1e-3])
    state = pickle.loads(pickle.dumps(sched.state_dict()))
    assert state["lr_lambdas"][0]["warmup_steps"] == 5


def test_schedule_errors():
    with pytest.raises(ConfigError, match="schedule"):
        make_sched(schedule="step")
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        make_sched(min_ratio=1.5)
    with pytest.raises(ConfigError, match="total"):
        make_sched(total=0)


def _reference_lars_step(params, state, lr, momentum, wd, eta, exclude):
    """LARS written per parameter, the plain way (the formula in LARS's docstring)."""
    for p in params:
        g = p.grad
        update = g + wd * p
        if not exclude:
            w_norm, g_norm = p.norm(), g.norm()
            if w_norm > 0 and g_norm > 0:
                update = update * (eta * w_norm / (g_norm + wd * w_norm))
        buf = state.setdefault(id(p), torch.zeros_like(p))
        buf.mul_(momentum).add_(update, alpha=lr)
        p.sub_(buf)


def test_lars_group_step_matches_per_parameter_reference_over_steps():
    """The fused (foreach) step equals the per-parameter formula, step after step, in both group kinds."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    with torch.no_grad():
        net[2].weight[0].zero_()  # a row of zeros keeps its own (nonzero) norm; the layer stays adaptive
    reference = copy.deepcopy(net)
    initial = copy.deepcopy(net)
    opt = build_optimizer(net, "lars", lr=0.5, weight_decay=1e-3, momentum=0.9, eta=0.02)
    state: dict = {}
    x = torch.randn(8, 6)
    for _ in range(5):
        for model in (net, reference):
            model.zero_grad()
            model(x).square().mean().backward()
        opt.step()
        with torch.no_grad():
            decay, no_decay = parameter_groups(reference, weight_decay=1e-3)
            _reference_lars_step(decay["params"], state, 0.5, 0.9, 1e-3, 0.02, exclude=False)
            _reference_lars_step(no_decay["params"], state, 0.5, 0.9, 0.0, 0.02, exclude=True)
    for got, want in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(net[0].weight, initial[0].weight)  # the steps did move the weights
