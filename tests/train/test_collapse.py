"""Collapse monitoring: the embedding-std statistic, each method's uniform-similarity loss, the verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecg_ray.losses.cpc import cpc_infonce
from ecg_ray.losses.ntxent import nt_xent
from ecg_ray.losses.swav import sinkhorn, swav_loss
from ecg_ray.methods import METHODS
from ecg_ray.methods.base import synthetic_batch
from ecg_ray.methods.embedding_stats import embedding_std
from ecg_ray.train.collapse import COLLAPSE_EPOCHS, assess
from tests.method_cases import encoder_for


def _reference_std(z: np.ndarray) -> float:
    """solo-learn's z_std written out: normalise each row, std of each column (n - 1), mean over columns."""
    rows = [row / max(np.sqrt(sum(v * v for v in row)), 1e-12) for row in z.astype(np.float64)]
    columns = list(zip(*rows, strict=True))
    stds = []
    for column in columns:
        mean = sum(column) / len(column)
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in column) / (len(column) - 1)))
    return sum(stds) / len(stds)


def test_embedding_std_of_identical_rows_is_zero():
    z = torch.randn(1, 32).repeat(64, 1) * 7.0  # the same direction whatever the scale
    assert float(embedding_std(z)) == pytest.approx(0.0, abs=1e-6)
    assert float(embedding_std(torch.zeros(64, 32))) == 0.0  # dead units (all-zero output) count as collapsed


def test_embedding_std_of_random_directions_is_one_over_sqrt_d():
    generator = torch.Generator().manual_seed(0)
    for dim in (16, 128):
        z = torch.randn(4096, dim, generator=generator) * 3.0 + 0.0
        value = float(embedding_std(z))
        assert value == pytest.approx(1 / math.sqrt(dim), rel=0.02)


def test_embedding_std_matches_the_hand_written_reference():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(50, 8, generator=generator) + torch.linspace(0, 2, 8)  # not centred, unequal spreads
    assert float(embedding_std(z)) == pytest.approx(_reference_std(z.numpy()), rel=1e-5)
    # (..., d) inputs: CPC's (sequences, steps, channels) latents are rows of one matrix
    assert float(embedding_std(z.reshape(5, 10, 8))) == pytest.approx(_reference_std(z.numpy()), rel=1e-5)


def _method(name: str, *overrides: str):
    from ecg_ray.config import load_config
    from ecg_ray.methods import build_method

    encoder = encoder_for(name)
    config = load_config(overrides=[f"method.name={name}", f"model.encoder={encoder}", "train.batch_size=8",
                                    *overrides])
    torch.manual_seed(0)
    method = build_method(config, fs=100.0)
    method.set_generator(torch.Generator().manual_seed(0))
    method.on_train_start(10)
    return method


def test_simclr_uniform_loss_is_nt_xent_of_equal_similarities():
    """ln(2N - 1) with N the global batch: what NT-Xent gives when every projection is the same."""
    z = torch.ones(8, 4)
    method = _method("simclr")
    assert method.uniform_loss(8, 1) == pytest.approx(float(nt_xent(z, z, temperature=0.5, gather=False)))
    assert method.uniform_loss(4, 2) == pytest.approx(math.log(15))  # 2 workers x 4 = the same global batch


def test_swav_uniform_loss_is_the_swapped_prediction_loss_of_equal_scores():
    method = _method("swav", "swav.prototypes=30")
    scores = [torch.zeros(8, 30), torch.zeros(8, 30)]
    codes = {0: sinkhorn(scores[0]), 1: sinkhorn(scores[1])}
    assert method.uniform_loss(8, 1) == pytest.approx(float(swav_loss(scores, codes, temperature=0.1)))


@pytest.mark.parametrize("negatives", ["batch", "sequence", "both"])
def test_cpc_uniform_loss_is_infonce_of_equal_scores(negatives):
    method = _method("cpc", f"cpc.negatives={negatives}", "cpc.num_negatives=16", "cpc.prediction_steps=3")
    zeros = torch.zeros(8, 20, 4)  # every score 0: the positive is one of 1 + negatives equal candidates
    expected = float(cpc_infonce(zeros, zeros, negatives=negatives, num_negatives=16,
                                 generator=torch.Generator().manual_seed(0)))
    assert method.uniform_loss(8, 1) == pytest.approx(expected)


def test_byol_has_no_uniform_loss():
    assert _method("byol").uniform_loss(8, 1) is None


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_forward_records_the_embedding_std_on_the_device(name):
    method = _method(name, *(["cpc.prediction_steps=3"] if name == "cpc" else []))
    x = torch.randn(8, 12, 250)
    method.train()
    method(synthetic_batch(x, method.batch_fields))
    recorded = method.embedding_std
    assert isinstance(recorded, torch.Tensor) and recorded.ndim == 0 and not recorded.requires_grad
    assert 0.0 < float(recorded) < 1.0 and method.embedding_dim > 0
    method.eval()
    with torch.no_grad():
        method(synthetic_batch(x, method.batch_fields))
    assert method.embedding_std is recorded  # validation batches leave the training figure alone


def _history(stds, ratios, dim=16, uniform=3.434):
    return [{"epoch": k, "loss": r * uniform if r is not None else 1.0, "embedding_std": s, "embedding_dim": dim,
             **({"loss_uniform": uniform, "loss_uniform_ratio": r} if r is not None else {})}
            for k, (s, r) in enumerate(zip(stds, ratios, strict=True))]


def test_assess_flags_a_collapsed_std_in_the_last_epochs():
    threshold = 0.1 / math.sqrt(16)
    verdict = assess(_history([0.2, 0.5 * threshold, 0.1 * threshold], [0.9, 0.8, 0.7]))
    assert verdict["collapsed"] and "embedding std" in verdict["reason"] and "loss" not in verdict["reason"]
    assert verdict["embedding_std_threshold"] == pytest.approx(threshold)
    assert verdict["embedding_std_random"] == pytest.approx(0.25)
    assert verdict["epochs_checked"] == COLLAPSE_EPOCHS
    # a low epoch that recovered is not collapse: the verdict is about the encoder the run leaves behind
    assert not assess(_history([0.5 * threshold, 0.5 * threshold, 0.2], [0.9, 0.8, 0.7]))["collapsed"]


def test_assess_flags_a_loss_at_its_uniform_value():
    verdict = assess(_history([0.2, 0.2, 0.2], [0.95, 0.999, 1.0]))
    assert verdict["collapsed"] and "uniform-similarity value 3.4340" in verdict["reason"]
    assert verdict["loss_uniform_ratio"] == 1.0
    healthy = assess(_history([0.2, 0.2, 0.2], [0.99, 0.98, 0.95]))
    assert not healthy["collapsed"] and healthy["reason"] is None
    # SwAV and CPC start a few percent above their uniform value: not stuck at it
    assert not assess(_history([0.2, 0.2], [1.03, 1.01]))["collapsed"]
    byol = assess(_history([0.2, 0.2], [None, None]))  # no uniform value: the std alone
    assert not byol["collapsed"] and byol["loss_uniform_ratio"] is None


def test_assess_of_a_history_without_the_figures_is_none():
    assert assess([{"epoch": 0, "loss": 3.0}]) is None
    assert assess([]) is None


def test_the_report_marks_a_collapsed_run_with_its_reason(tmp_path):
    import json

    from ecg_ray.report import write_report

    uniform = math.log(31)
    for name, std, loss in [("simclr-collapsed", 0.0, uniform), ("simclr-healthy", 0.17, 0.8 * uniform)]:
        history = [{"epoch": 0, "loss": loss, "samples_per_s": 100.0, "embedding_std": std, "embedding_dim": 16,
                    "loss_uniform": uniform, "loss_uniform_ratio": loss / uniform}]
        checkpoint = tmp_path / "runs" / name / "checkpoint_2026-01-01_00-00-01.000000"
        checkpoint.mkdir(parents=True)
        (checkpoint / "history.json").write_text(json.dumps(history))
    text = write_report(tmp_path).read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| simclr-")}
    assert rows["simclr-collapsed"].endswith("| **yes** |")
    assert rows["simclr-healthy"].endswith("| no (std 0.17) |")
    assert "- `simclr-collapsed`: embedding std 0 below 0.025 (0.1/sqrt(16)) in epoch 0; loss 3.4340 within 0.2% " \
           "of its uniform-similarity value 3.4340 in epoch 0" in text
    assert "simclr-healthy`:" not in text
