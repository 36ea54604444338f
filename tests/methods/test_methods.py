"""Methods on real ECG crops: every parameter learns, BYOL's EMA, SwAV's freeze/queue, CPC at init."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecg_ray.config import load_config
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import cut
from ecg_ray.methods import METHODS, build_method
from ecg_ray.methods.base import synthetic_batch
from tests.method_cases import encoder_for

EXTRA = {"swav": ["swav.prototypes=40", "swav.small_crops=1"], "cpc": ["cpc.prediction_steps=3"]}


@pytest.fixture(scope="module")
def crops(ptbxl_store) -> torch.Tensor:
    store = EcgStore(ptbxl_store)
    rng = np.random.default_rng(0)
    batch = [cut(store.signal(i), rng.integers(0, 700, 1), 300)[0] for i in range(16)]
    return torch.from_numpy(np.stack(batch))


def _method(name: str, *overrides: str):
    config = load_config(overrides=[f"method.name={name}", f"model.encoder={encoder_for(name)}",
                                    "train.batch_size=16", *EXTRA.get(name, []), *overrides])
    torch.manual_seed(0)
    method = build_method(config, fs=100.0)
    generator = torch.Generator().manual_seed(0)
    method.set_generator(generator)
    method.on_train_start(10)
    return method


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_trainable_parameter_gets_a_gradient(name, crops):
    """DDP without find_unused_parameters needs every trainable parameter in the graph."""
    method = _method(name)
    method.on_epoch_start(5)  # past SwAV's frozen-prototype epoch
    x = crops[:, :, :250] if name != "cpc" else crops
    out = method(synthetic_batch(x, method.batch_fields))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    method.after_backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_byol_ema_moves_every_target_parameter_and_buffer(crops):
    method = _method("byol")
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    before = {k: v.clone() for k, v in method.target.state_dict().items()}
    method({"signal": crops[:, :, :250]})["loss"].backward()  # train-mode forward also moves online BN buffers
    optimizer.step()
    method.after_optimizer_step(1)
    after = method.target.state_dict()
    online = torch.nn.Sequential(method.encoder, method.projector).state_dict()
    tau = method.tau_at(1)
    for key, value in after.items():
        if value.dtype.is_floating_point:
            expected = tau * before[key] + (1 - tau) * online[key]
            torch.testing.assert_close(value, expected, msg=key)
            # a move smaller than float32 resolution may round away (lerp); any visible one must show
            if ((1 - tau) * (online[key] - before[key])).abs().max() > 1e-6 * before[key].abs().max() + 1e-9:
                assert not torch.equal(value, before[key]), f"{key} did not move"
        else:
            assert torch.equal(value, online[key]), key  # num_batches_tracked copied
    biases = [k for k in after if k.endswith("bias")]
    running = [k for k in after if "running_mean" in k or "running_var" in k]
    assert biases and running  # the reference skipped exactly these
    assert all(not torch.equal(after[k], before[k]) for k in running)


def test_byol_tau_schedule():
    method = _method("byol", "byol.tau_base=0.99")
    method.on_train_start(100)
    assert method.tau_at(0) == pytest.approx(0.99)
    assert method.tau_at(50) == pytest.approx(0.995)
    assert method.tau_at(100) == pytest.approx(1.0)


def test_swav_prototypes_frozen_in_first_epoch_and_queue_fills(crops):
    method = _method("swav", "swav.queue_batches=2", "swav.queue_start_epoch=0", "swav.freeze_prototypes_epochs=1")
    method.on_epoch_start(0)
    method({"signal": crops[:, :, :250]})["loss"].backward()
    method.after_backward()
    assert method.prototypes.weight.grad is None
    assert int(method.queue_filled) == 16 and method.queue.abs().sum() > 0
    method.on_epoch_start(1)
    method.zero_grad()
    method({"signal": crops[:, :, :250]})["loss"].backward()
    method.after_backward()
    assert method.prototypes.weight.grad is not None


@pytest.mark.parametrize("negatives,count", [("sequence", 32), ("batch", 15)])
def test_cpc_loss_at_initialisation_close_to_log_negatives(negatives, count, crops):
    method = _method("cpc", f"cpc.negatives={negatives}", "cpc.num_negatives=32")
    with torch.no_grad():
        loss = float(method({"signal": crops})["loss"])
    assert loss == pytest.approx(math.log(1 + count), rel=0.1)
