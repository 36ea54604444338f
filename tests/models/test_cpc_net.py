"""CPC "4FC+2LSTM" network: shapes, pooled features, causality, gradients."""

from __future__ import annotations

import pytest
import torch

from ecg_ray.models import build_encoder
from ecg_ray.models.cpc_net import CPCEncoder


@pytest.fixture(scope="module")
def cpc() -> CPCEncoder:
    torch.manual_seed(0)
    return build_encoder("cpc_4fc2lstm")


def test_structure(cpc):
    convs = [m for m in cpc.encoder if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (12, 512, (1,)),
        (512, 512, (1,)),
        (512, 512, (1,)),
        (512, 512, (1,)),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in cpc.encoder) == 4
    assert cpc.lstm.num_layers == 2 and cpc.lstm.hidden_size == 512 and not cpc.lstm.bidirectional
    assert cpc.feature_dim == 1536 and cpc.downsample == 1
    # measured: 4,999,168 parameters (796,672 in the per-step encoder, 4,202,496 in the LSTM)
    assert sum(p.numel() for p in cpc.parameters()) == 4_999_168


@pytest.mark.parametrize("T", [250, 1000])
def test_shapes(cpc, T):
    cpc.eval()
    x = torch.randn(2, 12, T)
    with torch.no_grad():
        z = cpc.encode(x)
        c = cpc.context(z)
        assert z.shape == (2, T, 512)
        assert c.shape == (2, T, 512)
        assert cpc.forward_features(x).shape == (2, 512, T // cpc.downsample)
        assert cpc(x).shape == (2, 1536)


def test_forward_is_concat_max_mean_last(cpc):
    cpc.eval()
    x = torch.randn(2, 12, 100)
    with torch.no_grad():
        c = cpc.context(cpc.encode(x))
        expected = torch.cat([c.max(dim=1).values, c.mean(dim=1), c[:, -1, :]], dim=1)
        torch.testing.assert_close(cpc(x), expected)
        torch.testing.assert_close(cpc.forward_features(x), c.transpose(1, 2))


def test_context_is_causal(cpc):
    # eval mode: BN uses running stats, so the per-step encoder is strictly per step and any
    # leak from the future could only come from the LSTM
    cpc.eval()
    t = 40
    x = torch.randn(2, 12, 100)
    y = x.clone()
    y[:, :, t + 1 :] = torch.randn(2, 12, 100 - t - 1)
    with torch.no_grad():
        cx = cpc.context(cpc.encode(x))
        cy = cpc.context(cpc.encode(y))
    torch.testing.assert_close(cx[:, : t + 1], cy[:, : t + 1])
    assert not torch.allclose(cx[:, t + 1 :], cy[:, t + 1 :])


def test_gradients_flow_train_and_eval(cpc):
    cpc.train()
    cpc.zero_grad()
    cpc(torch.randn(2, 12, 50)).sum().backward()
    assert not [n for n, p in cpc.named_parameters() if p.grad is None]
    cpc.eval()
    with torch.no_grad():
        assert torch.isfinite(cpc(torch.randn(2, 12, 50))).all()
