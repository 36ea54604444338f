"""SwAV keeps its queue fill count on the host (no device read per step), also across a checkpoint."""

from __future__ import annotations

import pytest
import torch

from ecg_ray.config import load_config
from ecg_ray.methods import build_method
from ecg_ray.train.step import check_epoch_loss


def _swav():
    config = load_config(overrides=["method.name=swav", "swav.prototypes=10", "swav.queue_batches=2",
                                    "swav.queue_start_epoch=0", "train.batch_size=4"])
    torch.manual_seed(0)
    method = build_method(config, fs=100.0)
    method.set_generator(torch.Generator().manual_seed(0))
    method.on_train_start(10)
    method.on_epoch_start(0)
    return method


def test_queue_count_follows_the_buffer_and_survives_a_checkpoint():
    method = _swav().train()
    with torch.no_grad():
        for _ in range(3):
            method({"signal": torch.randn(4, 12, 250)})
    assert method._queue_count() == int(method.queue_filled) == 12
    restored = _swav().train()
    restored.load_state_dict(method.state_dict())
    assert restored._filled is None  # read once from the loaded buffer, on first use
    assert restored._queue_count() == 12
    with torch.no_grad():
        restored({"signal": torch.randn(4, 12, 250)})
    assert restored._queue_count() == int(restored.queue_filled) == 16


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_diverged_epoch_stops_the_run_naming_the_epoch(value):
    with pytest.raises(FloatingPointError, match="mean loss of epoch 7 is"):
        check_epoch_loss(value, 7)
    check_epoch_loss(1.5, 7)
