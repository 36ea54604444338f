"""The encoder registry: what each encoder declares holds for the network it builds, and a new encoder
defined in a test file alone is built, checked and fine-tuned with its own head and rate groups."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

from ecg_ray.config import Config
from ecg_ray.errors import ConfigError
from ecg_ray.models import (
    ENCODERS,
    CPCClassifierHead,
    Encoder,
    LinearHead,
    build_encoder,
    encoder_info,
    encoder_output,
    register_encoder,
)
from ecg_ray.models.registry import _ENCODERS
from ecg_ray.train.classifier import build_classifier, parameter_groups

# sha256 of "key:shape" lines of each state dict, recorded from the encoders before the registry
# (commit d500d74): a changed key or shape would make every saved checkpoint and encoder file unloadable.
STATE_DICT_LAYOUT = {
    "xresnet1d50": "307c489428f2a8e28a4c93af86987d33b6350a6d2bf01b30e6f6596f92a77265",
    "xresnet1d101": "1a4a5466434670a5def69bdce8316d5c46559c6da634d02b6f208a9d64a5fabc",
    "xresnet1d50_standard": "b5a1f9ed8aff8d8b8bac9e9675bb6d6b1bc0b75cac4f31a92910d484533194c3",
    "xresnet1d101_standard": "ae9751872dcc0b3371a3a1798611f85d569ec469b1e9df2dca3051a32681934c",
    "cpc_4fc2lstm": "1e934605fe437734faa6969f2a3ce429706617aa2b11f40620285495b58da807",
    "cpc_s4": "5390710b77fe6f93fe61e1d40c3226bc20aedd85f1aff000d2c843f5cfaabdfe",
    "cpc_s4_bidirectional": "5a6d0ac83a081442bb3adf0235bc4f78894b14d5e184a960c8e0ebc708c23f81",
    "vit1d_xs": "5e5cf6029efeeb64da144e3ed1d94c253338d0b946546453d6b9bc6427d060dc",
    "vit1d_s": "c7a8298c0b15e067d8d9b7e5d046230720c465638eb85606b87864e208716350",
}


def layout(encoder: nn.Module) -> str:
    return hashlib.sha256("\n".join(f"{k}:{tuple(v.shape)}" for k, v in encoder.state_dict().items())
                          .encode()).hexdigest()


def test_names_in_registration_order_and_read_only():
    assert list(ENCODERS) == list(STATE_DICT_LAYOUT)  # the reference-width default first
    with pytest.raises(TypeError):
        ENCODERS["mine"] = lambda in_channels=12: None


@pytest.mark.parametrize("name", list(STATE_DICT_LAYOUT))
def test_declarations_match_the_network(name):
    torch.manual_seed(0)
    encoder = build_encoder(name).eval()
    assert layout(encoder) == STATE_DICT_LAYOUT[name]
    info = encoder_info(name)
    assert (info.output, info.feature_dim, info.downsample) == (encoder.output, encoder.feature_dim,
                                                                 encoder.downsample)
    assert encoder_output(name) == info.output
    x = torch.randn(2, 12, 250)
    with torch.no_grad():
        assert encoder(x).shape == (2, info.feature_dim)
        assert encoder.forward_features(x).shape[-1] == math.ceil(250 / info.downsample)
        if info.output == "sequence":
            assert encoder.encode(x).shape[:2] == (2, math.ceil(250 / info.downsample))
    # the groups cover every parameter exactly once
    grouped = [id(p) for group in encoder.parameter_groups() for p in group.parameters()]
    assert len(grouped) == len(set(grouped)) and set(grouped) == {id(p) for p in encoder.parameters()}


def test_parameter_groups_run_from_the_head_down():
    xresnet = build_encoder("xresnet1d50")
    assert xresnet.parameter_groups() == [*reversed(xresnet.stages), xresnet.stem]
    cpc = build_encoder("cpc_4fc2lstm")
    assert cpc.parameter_groups() == [cpc.lstm, cpc.encoder]
    assert (cpc.grouped_finetuning, cpc.finetune_head) == (True, "mlp")
    assert (xresnet.grouped_finetuning, xresnet.finetune_head) == (False, "linear")


class ToyEncoder(Encoder):
    """Two conv groups and a pooled output: an encoder the package has never heard of."""

    finetune_head = "mlp"

    def __init__(self, in_channels: int = 12, width: int = 8):
        super().__init__()
        self.low = nn.Conv1d(in_channels, width, 5, stride=2)
        self.high = nn.Conv1d(width, width, 3, stride=2)
        self.feature_dim, self.downsample = width, 4

    def forward_features(self, x):
        return self.high(torch.relu(self.low(x)))

    def forward(self, x):
        return self.forward_features(x).mean(-1)


@pytest.fixture
def toy_registered():
    register_encoder("toy_test_encoder")(ToyEncoder)
    yield "toy_test_encoder"
    _ENCODERS.pop("toy_test_encoder", None)


def test_a_new_encoder_from_its_own_file(toy_registered):
    assert toy_registered in ENCODERS
    info = encoder_info(toy_registered)
    assert (info.output, info.feature_dim, info.downsample, info.finetune_head) == ("pooled", 8, 4, "mlp")
    assert build_encoder(toy_registered).parameter_groups()[0] is not None
    config = Config()
    config.model.encoder, config.eval.mode = toy_registered, "supervised"
    config.eval.discriminative_groups, config.eval.discriminative_lr_factor = "layer_groups", 0.5
    model = build_classifier(config, n_labels=3)
    assert isinstance(model.head, CPCClassifierHead) and model.head.in_dim == 8  # its declared head and width
    lrs = {id(p): g["lr"] for g in parameter_groups(model, config, lr=1.0) for p in g["params"]}
    # default groups: its children, the last defined nearest the head
    assert {lrs[id(p)] for p in model.encoder.high.parameters()} == {0.5}
    assert {lrs[id(p)] for p in model.encoder.low.parameters()} == {0.25}
    assert {lrs[id(p)] for p in model.head.parameters()} == {1.0}
    config.eval.mode = "linear"
    assert isinstance(build_classifier(config, n_labels=3).head, LinearHead)  # linear evaluation stays linear


def test_registering_a_taken_name_fails(toy_registered):
    register_encoder(toy_registered)(ToyEncoder)  # the same class again (a re-import) is fine

    def other(in_channels=12):
        return ToyEncoder(in_channels)

    with pytest.raises(TypeError, match="registered twice"):
        register_encoder(toy_registered)(other)


@pytest.mark.parametrize("broken, message", [
    (lambda in_channels=12: nn.Conv1d(in_channels, 4, 1), "must return an ecg_ray.models.Encoder"),
    (type("Sideways", (ToyEncoder,), {"output": "sideways"}), "output must be one of"),
    (type("NoHead", (ToyEncoder,), {"finetune_head": "transformer"}), "finetune_head must be one of"),
    (type("NoEncode", (ToyEncoder,), {"output": "sequence"}), "must define encode"),
])
def test_an_encoder_that_breaks_its_declarations_is_refused(broken, message):
    register_encoder("broken_test_encoder")(broken)
    try:
        with pytest.raises(TypeError, match=message):
            build_encoder("broken_test_encoder")
    finally:
        _ENCODERS.pop("broken_test_encoder", None)


def test_missing_feature_dim_is_refused():
    class NoWidth(Encoder):
        def __init__(self, in_channels=12):
            super().__init__()
            self.conv = nn.Conv1d(in_channels, 4, 1)
            self.downsample = 1

    register_encoder("nowidth_test_encoder")(NoWidth)
    try:
        with pytest.raises(TypeError, match="feature_dim must be an int"):
            build_encoder("nowidth_test_encoder")
    finally:
        _ENCODERS.pop("nowidth_test_encoder", None)


def test_unknown_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown encoder 'resnet9000'"):
        encoder_info("resnet9000")
