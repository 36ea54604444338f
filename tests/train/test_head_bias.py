"""``eval.head_bias_init: prior``: the head starts at each label's training prevalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecg_ray.cli import main
from ecg_ray.config import load_config
from ecg_ray.errors import ConfigError
from ecg_ray.train.classifier import build_classifier, init_head_bias


@pytest.mark.parametrize("encoder, mode", [("xresnet1d50", "linear"), ("cpc_4fc2lstm", "supervised")])
def test_prior_bias_is_the_log_odds_of_the_training_prevalence(encoder, mode):
    config = load_config(overrides=[f"model.encoder={encoder}", f"eval.mode={mode}"])
    model = build_classifier(config, 4)
    labels = np.zeros((200, 4), dtype=np.uint8)
    labels[:50, 0] = 1     # 25 %
    labels[:2, 1] = 1      # 1 %
    labels[:, 2] = 1       # every record: clipped to 1 - 1e-4
    init_head_bias(model, labels)                                   # label 3: none, clipped to 1e-4
    last = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    expected = [np.log(0.25 / 0.75), np.log(0.01 / 0.99), np.log((1 - 1e-4) / 1e-4), np.log(1e-4 / (1 - 1e-4))]
    assert np.allclose(last.bias.detach().numpy(), expected, rtol=1e-6)
    with torch.no_grad():  # with the weights at zero the outputs are exactly the prevalences
        last.weight.zero_()
        model.eval()
        p = torch.sigmoid(model(torch.randn(3, 12, 250))).mean(0).numpy()
    assert np.allclose(p, [0.25, 0.01, 1 - 1e-4, 1e-4], atol=1e-6)


def test_unknown_bias_init_is_refused(ptbxl_store, tmp_path, capsys):
    assert main(["evaluate", "--store", str(ptbxl_store), "--config", "jobs/smoke/eval-linear.yaml",
                 "--output", str(tmp_path), "--set", "eval.head_bias_init=zero"]) == 2
    assert "eval.head_bias_init: unknown value 'zero'" in capsys.readouterr().err


def test_head_without_a_bias_per_label_is_refused():
    model = build_classifier(load_config(), 4)
    with pytest.raises(ConfigError, match="bias per label"):
        init_head_bias(model, np.zeros((10, 5)))
