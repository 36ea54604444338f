"""The jobs in jobs/paper/ pinned to the reference's settings (../shared/reference/paper-protocol.md).

Each expectation carries the sentence of the protocol file it comes from; when that file is present
the test also checks that the sentence is still there, so a corrected fact cannot drift away from
the job silently. Learning rates are checked per parameter group of the real optimizer groups built
for the PTB-XL sample's 71-label set, phase by phase.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch import nn

from ecg_ray.config import load_config
from ecg_ray.data.store import EcgStore
from ecg_ray.models.heads import CPCClassifierHead, LinearHead
from ecg_ray.train.classifier import build_classifier, parameter_groups
from ecg_ray.train.downstream import plan_phases

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "jobs" / "paper"
PROTOCOL = ROOT.parent / "shared" / "reference" / "paper-protocol.md"

# job -> (protocol sentences, epochs per phase, {phase: {group: lr}}, head type, batch, weight decay)
EXPECTED = {
    "eval-linear.yaml": (
        ["Linear(512->71), 50 epochs,", "AdamW lr 4e-3, wd 0.1, batch 128"],
        [50], [{"head": 4e-3}], LinearHead, 128, 0.1),
    "eval-finetune.yaml": (
        ["all parameters at one lr, 50 epochs, AdamW lr 0.01, wd 0.1, constant lr"],
        [50], [{"head": 0.01, "stem": 0.01, "stage1": 0.01, "stage4": 0.01}], LinearHead, 128, 0.1),
    "eval-finetune-discriminative.yaml": (
        ["lr divided by 4 per layer group from the head down"],
        [50], [{"head": 0.01, "stage4": 0.01 / 4, "stage3": 0.01 / 16, "stage2": 0.01 / 64,
                "stage1": 0.01 / 256, "stem": 0.01 / 1024}], LinearHead, 128, 0.1),
    "eval-supervised.yaml": (
        ["all parameters at one lr, 50 epochs, AdamW lr 0.01, wd 0.1, constant lr"],
        [50], [{"head": 0.01, "stem": 0.01, "stage4": 0.01}], LinearHead, 128, 0.1),
    "cpc-finetune.yaml": (
        ["head only 50 epochs at lr 1e-3 (batch 128, 2.5 s input), then all layers 20 epochs at",
         "lr 1e-4 with discriminative factor 0.1 (encoder 1e-6, LSTM 1e-5, head 1e-4), AdamW wd 1e-3."],
        [50, 20], [{"head": 1e-3}, {"head": 1e-4, "lstm": 1e-5, "per_step": 1e-6}], CPCClassifierHead, 128, 1e-3),
}


def _group_lrs(model, groups) -> dict[str, float]:
    """The lr of every named part of the model, from the optimizer groups (each part in one lr)."""
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    encoder = model.encoder
    parts = {"head": model.head}
    if hasattr(encoder, "lstm"):
        parts.update(lstm=encoder.lstm, per_step=encoder.encoder)
    else:
        parts.update(stem=encoder.stem, **{f"stage{i + 1}": s for i, s in enumerate(encoder.stages)})
    out = {}
    for name, module in parts.items():
        lrs = {lr_of.get(id(p)) for p in module.parameters()}
        assert len(lrs) == 1, f"{name} has parameters at several lrs (or frozen and trained): {lrs}"
        out[name] = lrs.pop()
    return out


def test_protocol_sentences_are_still_in_the_reference_facts():
    if not PROTOCOL.exists():
        pytest.skip(f"{PROTOCOL} not found (it lives in ../shared/reference beside the repo)")
    text = " ".join(PROTOCOL.read_text().split())
    for job, (sentences, *_rest) in EXPECTED.items():
        for sentence in sentences:
            assert sentence in text, f"{job}: the protocol no longer says {sentence!r}"
    for common in ("Training input: one random 250-sample (2.5 s) crop per record per epoch.",
                   "windows of 250 with stride 125", "BN, Dropout 0.25, Linear 1536->512, ReLU, BN, Dropout 0.5, "
                   "Linear 512->71", "select the epoch with the best aggregated validation macro AUC",
                   "phase 2 restarts from the best head-only checkpoint with a new optimizer"):
        assert common in text, common


@pytest.mark.parametrize("job", sorted(EXPECTED))
def test_paper_job_settings(job, ptbxl_store):
    sentences, epochs, phase_lrs, head_type, batch, wd = EXPECTED[job]
    config = load_config(PAPER / job, overrides=[f"data.store={ptbxl_store}"])
    store = EcgStore(ptbxl_store)
    n_labels = len(store.manifest["label_sets"][config.data.label_set])
    assert config.data.label_set == "all" and n_labels == 71
    assert (config.data.train_folds, config.data.val_folds, config.data.test_folds) == (list(range(1, 9)), [9], [10])
    assert (config.data.crop, config.data.window, config.data.stride) == (250, 250, 125)
    assert config.train.batch_size == batch and config.optim.name == "adamw" and config.optim.weight_decay == wd
    assert config.optim.schedule == "constant" and config.optim.warmup_epochs == 0  # the reference: no schedule
    phases = plan_phases(config)
    assert [p.epochs for p in phases] == epochs
    model = build_classifier(config, n_labels)
    assert isinstance(model.head, head_type)
    last = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
    assert last.out_features == 71 and (head_type is not LinearHead or last.in_features == 512)
    for phase, expected in zip(phases, phase_lrs, strict=True):
        model.set_encoder_trainable(phase.train_encoder)
        lrs = _group_lrs(model, parameter_groups(model, config, lr=phase.lr))
        for name, lr in expected.items():
            assert np.isclose(lrs[name], lr, rtol=1e-9), f"{job} {phase.name}: {name} lr {lrs[name]} != {lr}"
        if not phase.train_encoder:
            assert {k for k, v in lrs.items() if v is not None} == {"head"}  # encoder frozen
