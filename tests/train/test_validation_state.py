"""Held-out SSL validation leaves training state alone: weights, BN statistics, SwAV's queue, RNG."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from ecg_ray.config import load_config
from ecg_ray.data.sources.base import Record
from ecg_ray.data.store import EcgStore
from ecg_ray.data.store_writer import StoreWriter
from ecg_ray.methods import METHODS, build_method
from ecg_ray.methods.base import synthetic_batch
from ecg_ray.train.pretrain import _validation
from tests.method_cases import encoder_for

# SwAV with its queue already in use (epoch >= queue_start_epoch), so validation could push into it.
EXTRA = {"swav": ["swav.prototypes=20", "swav.queue_batches=2", "swav.queue_start_epoch=0"],
         "cpc": ["cpc.prediction_steps=[4]", "cpc.num_negatives=8"]}


@pytest.fixture(scope="module")
def noisy_store(tmp_path_factory):
    """A small unlabelled-looking store whose signals are random (BN statistics would move on them)."""
    out = tmp_path_factory.mktemp("val") / "store"
    writer = StoreWriter(out, fs=100.0)
    rng = np.random.default_rng(0)
    for i in range(64):
        signal = rng.normal(3.0, 2.0, size=(300, 12)).astype(np.float32)
        writer.add(Record(id=f"r{i}", dataset="noise", file=f"noise/{i}", signal=signal, fs=100.0,
                          fs_original=100.0, labels=[], metadata={"fold": 1}))
    writer.finalize(sources=[{"kind": "test-noise"}], label_names=None)
    return EcgStore(out)


def _snapshot(method) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    state["__generator__"] = method.generator.get_state().clone()
    return state


@pytest.mark.parametrize("name", sorted(METHODS))
def test_validation_does_not_change_training_state(name, ray_session, noisy_store):
    config = load_config(overrides=[f"method.name={name}", f"model.encoder={encoder_for(name)}", "data.crop=200",
                                    "train.batch_size=8", "train.probe=false", *EXTRA.get(name, [])])
    torch.manual_seed(0)
    method = build_method(config, fs=100.0)
    method.set_generator(torch.Generator().manual_seed(0))
    method.on_train_start(10)
    method.on_epoch_start(3)
    method.train()
    with torch.no_grad():  # a training forward first: SwAV's queue holds real entries, BN has moved
        method(synthetic_batch(torch.randn(8, 12, 200), method.batch_fields))
    before = _snapshot(method)
    val_idx = np.arange(32)
    metrics = _validation(config, method, method, noisy_store, val_idx, per_worker=8, world=1, rank=0,
                          device=torch.device("cpu"), autocast=contextlib.nullcontext, has_labels=False,
                          train_idx=np.arange(32, 64), probe_fn=None)
    assert np.isfinite(metrics["val_loss"])  # validation really ran on the held-out records
    after = _snapshot(method)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []
    assert method.training  # back in train mode for the next epoch
