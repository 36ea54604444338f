"""A run directory with a real checkpoint, written without Ray (the layout pretraining writes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecg_ray.config import Config, to_dict
from ecg_ray.models import build_encoder
from ecg_ray.train.checkpoint import save_checkpoint, training_state


def trained_like_weights(encoder_name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights whose BatchNorm statistics are not the defaults, so eval mode uses them."""
    torch.manual_seed(seed)
    encoder = build_encoder(encoder_name)
    weights = encoder.state_dict()
    for name, tensor in weights.items():
        if name.endswith("running_mean"):
            tensor.normal_(0.0, 0.1)
        elif name.endswith("running_var"):
            tensor.uniform_(0.5, 2.0)
    return weights


def write_run(run_dir: Path, *, encoder: str = "xresnet1d50", method: str = "simclr", store: str | None = None,
              augmentations: list[dict] | None = None, epoch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A run directory with one checkpoint (encoder weights, a projector, the run config); returns the weights."""
    config = Config()
    config.model.encoder = encoder
    config.method.name = method
    config.data.store = store
    config.augmentations = augmentations
    weights = trained_like_weights(encoder, seed)
    model = {f"encoder.{k}": v for k, v in weights.items()}
    model["projector.0.weight"] = torch.randn(4, 4)  # method parts are not exported
    state = training_state(config, 100.0, model=model, optimizer={}, scheduler={}, scaler=None, epoch=epoch)
    assert to_dict(config)["model"]["encoder"] == encoder
    save_checkpoint(run_dir / f"checkpoint_{epoch:06d}", state, [{"epoch": e} for e in range(epoch + 1)])
    return weights


@pytest.fixture
def run_dir(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    """(run directory, its encoder weights): xresnet1d50, SimCLR, no store."""
    run = tmp_path / "run"
    return run, write_run(run)
