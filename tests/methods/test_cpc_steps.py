"""CPC prediction steps: the reference's single bias-free step +12, the 1..K shorthand, validation.

A small 4FC+2LSTM (16 units) on short synthetic crops keeps every test well under a second; the
reference losses are computed by hand from the encoder's latents, the predictor weights and the
negative indices the method's generator draws.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ecg_ray.config import load_config
from ecg_ray.errors import ConfigError
from ecg_ray.losses.cpc import sample_sequence_negatives
from ecg_ray.methods.cpc import CPC, normalise_steps
from ecg_ray.models import cpc_4fc2lstm

HIDDEN = 16


def _config(*overrides: str):
    return load_config(overrides=["method.name=cpc", "model.encoder=cpc_4fc2lstm", f"cpc.hidden_dim={HIDDEN}",
                                  "cpc.num_negatives=8", "data.crop=40", *overrides])


def _method(*overrides: str, seed: int = 0) -> CPC:
    torch.manual_seed(seed)
    return CPC(_config(*overrides), cpc_4fc2lstm(hidden=HIDDEN), fs=100.0)


def _batch(batch: int = 4, length: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 12, length, generator=torch.Generator().manual_seed(seed))


def _hand_infonce(p: torch.Tensor, z: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per (sequence, position): -log softmax of [<p, z_pos>, <p, z_neg_1..M>] at the positive."""
    losses = []
    for b in range(p.shape[0]):
        for t in range(p.shape[1]):
            scores = [p[b, t] @ z[b, t]] + [p[b, t] @ z[b, int(u)] for u in idx[b, t]]
            losses.append(-F.log_softmax(torch.stack(scores), dim=0)[0])
    return torch.stack(losses).mean()


def _hand_loss(method: CPC, x: torch.Tensor, steps: list[int], seed: int) -> torch.Tensor:
    """Mean over ``steps`` of the hand InfoNCE, with the negatives drawn in the method's order."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = method.encoder.encode(x)
        c = method.encoder.context(z)
        per_step = []
        for k, predictor in zip(steps, method.predictors, strict=True):
            p = c[:, :-k] @ predictor.weight.T
            if predictor.bias is not None:
                p = p + predictor.bias
            target = z[:, k:]
            idx = sample_sequence_negatives(x.shape[0], target.shape[1], method.c.num_negatives, generator)
            per_step.append(_hand_infonce(p, target, idx))
    return torch.stack(per_step).mean()


def _loss(method: CPC, x: torch.Tensor, seed: int) -> torch.Tensor:
    method.set_generator(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return method({"signal": x})["loss"]


def test_reference_setting_is_one_bias_free_predictor_for_step_12():
    method = _method("cpc.prediction_steps=[12]", "cpc.predictor_bias=false")
    assert method.steps == [12]
    assert len(method.predictors) == 1 and method.predictors[0].bias is None
    assert [k for k in method.state_dict() if not k.startswith("encoder.")] == ["predictors.0.weight"]
    x = _batch()
    loss = _loss(method, x, seed=5)
    expected = _hand_loss(method, x, [12], seed=5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Step 1 with the same weights and draws scores a different loss: the method really used step 12.
    assert _hand_loss(method, x, [1], seed=5).item() != pytest.approx(loss.item(), rel=1e-3)


def test_multi_step_loss_is_the_mean_of_the_per_step_losses_with_biases():
    method = _method("cpc.prediction_steps=[2, 5]")
    assert all(p.bias is not None for p in method.predictors)
    x = _batch()
    expected = _hand_loss(method, x, [2, 5], seed=7)
    assert _loss(method, x, seed=7).item() == pytest.approx(expected.item(), rel=1e-5)


def test_integer_k_is_steps_one_to_k():
    short, listed = _method("cpc.prediction_steps=3"), _method("cpc.prediction_steps=[1, 2, 3]")
    assert short.steps == listed.steps == [1, 2, 3]
    a, b = short.state_dict(), listed.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = _batch()
    assert _loss(short, x, seed=3).item() == _loss(listed, x, seed=3).item()


def test_default_keeps_the_old_checkpoint_keys():
    """Checkpoints of ``prediction_steps: 12`` (12 biased predictors) load into the default [1..12]."""
    method = _method()
    assert method.steps == list(range(1, 13))
    keys = [k for k in method.state_dict() if not k.startswith("encoder.")]
    assert keys == [f"predictors.{i}.{w}" for i in range(12) for w in ("weight", "bias")]
    old = _method("cpc.prediction_steps=12", seed=1).state_dict()
    method.load_state_dict(old, strict=True)
    assert torch.equal(method.predictors[11].bias, old["predictors.11.bias"])


@pytest.mark.parametrize("value,message", [
    ("[]", "empty"),
    ("0", ">= 1"),
    ("[0, 12]", "positive"),
    ("[-1]", "positive"),
    ("[1, 12, 1]", r"unique, \[1\] repeated"),
    ("[1.5]", "integer"),
    ("true", "expected a list"),  # the loader rejects a bool before the method sees it
])
def test_bad_steps_raise_config_error_naming_the_key(value, message):
    with pytest.raises(ConfigError, match=r"cpc\.prediction_steps") as err:
        _method(f"cpc.prediction_steps={value}")
    assert err.match(message)


def test_bad_steps_caught_without_load_config():
    """A config built in code skips the loader's type checks; the method still refuses."""
    for value in ([1, True], "12", [2.0], None):
        with pytest.raises(ConfigError, match=r"cpc\.prediction_steps"):
            normalise_steps(value)


def test_step_the_crop_cannot_reach_fails_at_construction():
    # 12 ahead with sequence negatives needs 12 + 2 latents: the positive and one other position.
    _method("cpc.prediction_steps=[12]", "data.crop=14")
    with pytest.raises(ConfigError, match=r"cpc\.prediction_steps: step 12 .*data\.crop=13"):
        _method("cpc.prediction_steps=[12]", "data.crop=13")
    with pytest.raises(ConfigError, match=r"step 12 .*data\.crop=12"):
        _method("cpc.prediction_steps=[1, 12]", "data.crop=12")
    # Batch negatives come from other sequences: one predicted position is enough.
    _method("cpc.prediction_steps=[12]", "data.crop=13", "cpc.negatives=batch")


def test_input_shorter_than_the_crop_fails_instead_of_dropping_steps():
    method = _method("cpc.prediction_steps=[1, 12]")
    assert torch.isfinite(_loss(method, _batch(length=14), seed=0))
    with pytest.raises(ConfigError, match=r"step 12 .*13 latent steps"):
        _loss(method, _batch(length=13), seed=0)


def test_reference_setting_learns_on_a_predictable_signal():
    """Phase-shifted sines: z_{t+12} follows from the context, so the step-12 loss must fall."""
    method = _method("cpc.prediction_steps=[12]", "cpc.predictor_bias=false")
    g = torch.Generator().manual_seed(0)
    t = torch.arange(40, dtype=torch.float32)
    freq = 0.15 + 0.2 * torch.rand(8, 12, 1, generator=g)
    phase = 2 * math.pi * torch.rand(8, 12, 1, generator=g)
    x = torch.sin(freq * t + phase)
    method.set_generator(torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = method({"signal": x})["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(1 + 8), rel=0.1)  # untrained: ln(1 + negatives)
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
