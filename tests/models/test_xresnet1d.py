"""xresnet1d encoders: shapes, parameter counts against the paper, zero-init, gradients, registry."""

from __future__ import annotations

import math

import pytest
import torch

from ecg_ray.errors import ConfigError
from ecg_ray.models import ENCODERS, build_encoder, encoder_names
from ecg_ray.models.xresnet1d import Bottleneck1d, XResNet1d


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def ref50() -> XResNet1d:
    torch.manual_seed(0)
    return build_encoder("xresnet1d50")


@pytest.mark.parametrize("T", [250, 1000])
@pytest.mark.parametrize(
    ("name", "channels", "feature_dim"),
    [("xresnet1d50", 256, 512), ("xresnet1d101", 256, 512), ("xresnet1d50_standard", 2048, 4096)],
)
def test_shapes(name, channels, feature_dim, T):
    model = build_encoder(name).eval()
    x = torch.randn(2, 12, T)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert model.downsample == 32
    # every stride-2 step (stem conv, max-pool, strided conv / ceil-mode avg-pool) maps T -> ceil(T / 2)
    assert feats.shape == (2, channels, math.ceil(T / model.downsample))
    assert model.feature_dim == feature_dim
    assert out.shape == (2, feature_dim)
    # concat pooling: first half max over time, second half mean over time
    torch.testing.assert_close(out, torch.cat([feats.amax(-1), feats.mean(-1)], dim=1))


def test_avg_pool_option_gives_channel_width_features():
    model = build_encoder("xresnet1d50_standard", concat_pool=False).eval()
    assert model.feature_dim == 2048
    with torch.no_grad():
        assert model(torch.randn(2, 12, 250)).shape == (2, 2048)


def test_short_input_and_other_channel_counts():
    model = build_encoder("xresnet1d50", in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32)).shape == (2, 512)


def test_parameter_counts_match_paper():
    # measured: xresnet1d50 886,400 (paper 0.886 M); xresnet1d101 1,804,672 (paper 1.80 M)
    p50 = n_params(build_encoder("xresnet1d50"))
    p101 = n_params(build_encoder("xresnet1d101"))
    assert abs(p50 - 886_000) / 886_000 < 0.02
    assert abs(p101 - 1_800_000) / 1_800_000 < 0.03
    # measured: standard widths 18,486,144 (50) and 33,021,824 (101)
    assert n_params(build_encoder("xresnet1d50_standard")) > 10 * p50
    assert n_params(build_encoder("xresnet1d101_standard")) > n_params(build_encoder("xresnet1d50_standard"))


def test_zero_init_makes_blocks_identity(ref50):
    model = ref50.eval()
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck1d)]
    assert len(blocks) == 3 + 4 + 6 + 3
    x = torch.randn(2, 12, 250)
    with torch.no_grad():
        h = model.stem(x)
        for block in blocks:
            last_bn = block.convs[-1][1]
            assert isinstance(last_bn, torch.nn.BatchNorm1d)
            assert torch.all(last_bn.weight == 0)
            # in eval mode BN is affine with weight 0 and bias 0, so the residual branch is exactly 0
            assert torch.all(block.convs(h) == 0)
            out = block(h)
            torch.testing.assert_close(out, torch.relu(block.shortcut(h)))
            h = out


def test_shortcut_structure(ref50):
    blocks = [m for m in ref50.modules() if isinstance(m, Bottleneck1d)]
    # first block of stage 1: 64 -> 256 channels, no stride: 1x1 conv + BN only
    assert [type(m).__name__ for m in blocks[0].shortcut] == ["Sequential"]
    # second block: identity
    assert len(blocks[1].shortcut) == 0
    # first block of stage 2: strided, same channels: avg-pool only
    strided = blocks[3]
    assert [type(m).__name__ for m in strided.shortcut] == ["AvgPool1d"]
    assert strided.convs[1][0].stride == (2,) and strided.convs[1][0].kernel_size == (5,)


def test_gradients_flow_train_and_eval(ref50):
    model = ref50
    model.train()
    model.zero_grad()
    out = model(torch.randn(2, 12, 250))
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 12, 250))).all()


def test_registry_and_unknown_name():
    assert encoder_names() == list(ENCODERS)
    assert {
        "xresnet1d50",
        "xresnet1d101",
        "xresnet1d50_standard",
        "xresnet1d101_standard",
        "cpc_4fc2lstm",
    } <= set(encoder_names())
    with pytest.raises(ConfigError) as err:
        build_encoder("resnet9000")
    msg = str(err.value)
    assert "resnet9000" in msg
    for name in encoder_names():
        assert name in msg
