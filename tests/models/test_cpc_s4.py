"""cpc_s4 encoder (CNN + S4, ECG-CPC): registration, declarations, causality, size, CPC training on it."""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.models import build_encoder, encoder_info, encoders
from ecg_ray.models.cpc_s4 import CPCS4Encoder


@pytest.fixture(scope="module")
def encoder() -> CPCS4Encoder:
    torch.manual_seed(0)
    return build_encoder("cpc_s4")


def test_registered_as_a_sequence_encoder():
    assert "cpc_s4" in encoders()
    info = encoder_info("cpc_s4")  # read on the meta device
    assert (info.output, info.feature_dim, info.downsample) == ("sequence", 1536, 2)
    assert info.grouped_finetuning and info.finetune_head == "mlp"


def test_structure_and_size_follow_ecg_cpc(encoder):
    convs = [m for m in encoder.encoder if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (12, 512, 3, 2), (512, 512, 1, 1), (512, 512, 1, 1), (512, 512, 1, 1)]
    blocks = encoder.s4.blocks
    assert len(blocks) == 4 and all(b.layer.d_state == 8 and not b.layer.bidirectional for b in blocks)
    assert all(isinstance(b.norm, torch.nn.LayerNorm) and not b.prenorm and b.dropout.p == 0.2 for b in blocks)
    # measured: 2,951,168 = 808,960 (CNN) + 2,142,208 (S4); ECG-CPC reports 3.8 M with its heads
    counts = [sum(p.numel() for p in part.parameters()) for part in (encoder, encoder.encoder, encoder.s4)]
    assert counts == [2_951_168, 808_960, 2_142_208]


@pytest.mark.parametrize("length", [250, 301, 1000])
def test_declarations_match_forward(encoder, length):
    encoder.eval()
    x = torch.randn(2, 12, length)
    steps = math.ceil(length / encoder.downsample)
    with torch.no_grad():
        z = encoder.encode(x)
        c = encoder.context(z)
        assert z.shape == c.shape == (2, steps, 512)
        assert encoder.forward_features(x).shape == (2, 512, steps)
        features = encoder(x)
    assert features.shape == (2, encoder.feature_dim)
    torch.testing.assert_close(features, torch.cat([c.amax(1), c.mean(1), c[:, -1]], dim=1))


def test_parameter_groups_cover_every_parameter_once(encoder):
    groups = encoder.parameter_groups()
    assert groups == [encoder.s4, encoder.encoder]  # head down
    listed = [id(p) for group in groups for p in group.parameters()]
    assert len(listed) == len(set(listed))
    assert set(listed) == {id(p) for p in encoder.parameters()}


def test_latents_and_context_see_no_later_input(encoder):
    # eval: BatchNorm uses running statistics, so only the convolutions and S4 could leak
    encoder.eval()
    x = torch.randn(2, 12, 200)
    t = 60  # z_t covers inputs 2t-2 .. 2t, so changing inputs after 2t leaves z_<=t, c_<=t alone
    y = x.clone()
    y[:, :, 2 * t + 1:] = torch.randn_like(y[:, :, 2 * t + 1:])
    with torch.no_grad():
        zx, zy = encoder.encode(x), encoder.encode(y)
        cx, cy = encoder.context(zx), encoder.context(zy)
    torch.testing.assert_close(zx[:, :t + 1], zy[:, :t + 1])
    torch.testing.assert_close(cx[:, :t + 1], cy[:, :t + 1])
    assert not torch.allclose(cx[:, t + 1:], cy[:, t + 1:])


def test_gradients_flow_to_every_parameter(encoder):
    encoder.train()
    encoder.zero_grad()
    encoder(torch.randn(2, 12, 64)).sum().backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_cpc_method_trains_on_it_unchanged():
    """The cpc method with model.encoder=cpc_s4: latent steps come from encoder.downsample, the loss falls."""
    from ecg_ray.config import load_config
    from ecg_ray.methods import build_method
    from ecg_ray.methods.base import synthetic_batch

    torch.manual_seed(0)
    config = load_config(None, {"method.name": "cpc", "model.encoder": "cpc_s4", "data.crop": 120,
                                "cpc.prediction_steps": [2, 4], "cpc.num_negatives": 16,
                                "data.store": "unused"})
    method = build_method(config, fs=100.0)
    generator = torch.Generator()
    generator.manual_seed(0)
    method.set_generator(generator)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    # a fixed batch of smooth random signals: CPC can learn to predict their latents
    signal = torch.cumsum(torch.randn(8, 12, 120), dim=-1) * 0.1
    batch = synthetic_batch(signal, method.batch_fields)
    losses = []
    method.train()
    for _ in range(15):
        loss = method(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # dot-product scores of unnormalised latents start far from uniform (ln 17 = 2.8); training must
    # take the loss below the uniform level, not just down from a large start
    assert losses[-1] < 0.5 * math.log(17) and losses[-1] < 0.2 * losses[0], losses


def test_bidirectional_variant_sees_both_directions_and_cpc_refuses_it():
    """cpc_s4_bidirectional: same network with an anti-causal kernel per S4 layer; for supervised use only."""
    from ecg_ray.config import load_config
    from ecg_ray.errors import ConfigError
    from ecg_ray.methods import build_method

    torch.manual_seed(0)
    encoder = build_encoder("cpc_s4_bidirectional").eval()
    assert not encoder.causal and all(b.layer.bidirectional for b in encoder.s4.blocks)
    # the anti-causal kernel adds 2 x (512 x 8 complex pairs) per layer: 16,384 parameters over 4 layers
    assert sum(p.numel() for p in encoder.parameters()) == 2_951_168 + 16_384
    x = torch.randn(2, 12, 200)
    y = x.clone()
    y[:, :, 150:] = torch.randn_like(y[:, :, 150:])
    with torch.no_grad():
        cx, cy = encoder.context(encoder.encode(x)), encoder.context(encoder.encode(y))
    # steps before the change (t < 74) now see it: information flows backwards in time
    assert not torch.allclose(cx[:, :70], cy[:, :70])
    config = load_config(None, {"method.name": "cpc", "model.encoder": "cpc_s4_bidirectional", "data.crop": 120,
                                "cpc.prediction_steps": [2], "cpc.negatives": "sequence",
                                "cpc.num_negatives": 8, "data.store": "unused"})
    with pytest.raises(ConfigError, match="causal"):
        build_method(config, fs=100.0)
