"""data.leads: names checked as prepare checks them, the zeroing helper, and the downstream data path.

The data-path test streams >= 10k short synthetic records through several read tasks (the
training-crop stream of ``ecg-ray evaluate``) into a model restricted to [I, II, V1] and checks,
per batch, that the model saw exact zeros in the other leads and the stream's values, bit for
bit, in the kept ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ecg_ray.config import load_config
from ecg_ray.data.leads import kept_leads, lead_set_text, lead_subset, zero_missing_leads
from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.data.sources.base import Record
from ecg_ray.data.store_writer import StoreWriter
from ecg_ray.errors import ConfigError
from ecg_ray.train.downstream import restrict_leads

SUBSET = ["I", "II", "V1"]
KEPT = [CANONICAL_LEADS.index(lead) for lead in SUBSET]
DROPPED = [k for k in range(12) if k not in KEPT]


def test_names_are_canonical_and_ordered():
    assert lead_subset(["v1", "DI", "ii"]) == ("I", "II", "V1")
    assert lead_subset(["avr", "aVL"]) == ("aVR", "aVL")
    assert lead_subset(None) is None
    assert kept_leads(SUBSET).tolist() == [k in KEPT for k in range(12)]
    assert lead_set_text(SUBSET) == "I,II,V1" and lead_set_text(None) == "all 12"
    assert lead_set_text(list(CANONICAL_LEADS)) == "all 12"


@pytest.mark.parametrize("leads,message", [
    (["I", "X7"], r"unknown lead name\(s\) 'X7'"),
    (["aVR", "avr"], "aVR listed more than once"),
    ([], "data.leads is empty"),
    ("I,II", "must be a list of lead names"),
])
def test_bad_lead_lists_are_config_errors(leads, message):
    with pytest.raises(ConfigError, match=message):
        lead_subset(leads)


def test_set_override_list_syntax_and_validation():
    config = load_config(overrides=["data.leads=[I,II,V1]", "data.window=0"])
    assert config.data.leads == SUBSET and config.data.window == 0
    assert load_config(overrides=["data.leads=[i, avf]"]).data.leads == ["i", "avf"]  # canonicalised where used
    with pytest.raises(ConfigError, match="unknown lead name"):
        load_config(overrides=["data.leads=[I,II,V9]"])
    with pytest.raises(ConfigError, match="data.window must be >= 1 .samples., or 0 for whole records"):
        load_config(overrides=["data.window=-1"])
    with pytest.raises(ConfigError, match=r"data.leads\[1\]: expected a string"):
        load_config(overrides=["data.leads=[I, 2]"])


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_zero_missing_leads_is_exact_and_leaves_the_input(kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 12, 30)).astype(np.float32)
    x[0, 3, 0] = np.nan  # a dropped lead's NaN becomes 0, not NaN (where, not a product)
    x = torch.from_numpy(x) if kind == "torch" else x
    before = x.copy() if kind == "numpy" else x.clone()
    y = zero_missing_leads(x, kept_leads(SUBSET))
    y, x, before = (np.asarray(a) for a in (y, x, before))
    assert np.array_equal(x, before, equal_nan=True)
    assert (y[:, DROPPED] == 0).all() and not np.signbit(y[:, DROPPED]).any()
    assert np.array_equal(y[:, KEPT], x[:, KEPT])
    with pytest.raises(ValueError, match="expected a batch"):
        zero_missing_leads(x[0], kept_leads(SUBSET))


class Recorder(nn.Module):
    """Keeps what it was fed; its output is a constant (the test needs the input only)."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x)
        return x.new_zeros(len(x), 1)


def test_restrict_leads_hook_keeps_the_state_dict():
    model = nn.Sequential(nn.Conv1d(12, 4, 3))
    keys = list(model.state_dict())
    restrict_leads(model, SUBSET)
    assert list(model.state_dict()) == keys
    x = torch.randn(2, 12, 20)
    expected = model[0](zero_missing_leads(x, kept_leads(SUBSET)))
    assert torch.equal(model(x), expected)
    assert restrict_leads(Recorder(), None)._forward_pre_hooks == {}
    assert restrict_leads(Recorder(), list(CANONICAL_LEADS))._forward_pre_hooks == {}  # all 12: nothing to zero


RECORDS, LENGTH, CROP = 10_000, 60, 50


def _nonzero_store(out) -> str:
    """RECORDS short records whose every sample is away from zero (a zero seen by the model = a dropped lead)."""
    rng = np.random.default_rng(3)
    writer = StoreWriter(out, fs=100.0)
    for i in range(RECORDS):
        values = rng.standard_normal((LENGTH, 12)).astype(np.float32)
        signal = np.sign(values) * (np.abs(values) + 0.25)
        writer.add(Record(id=f"r{i:05d}", dataset="synthetic", file=f"synthetic/{i}", signal=signal, fs=100.0,
                          fs_original=100.0, labels=["A" if i % 2 else "B"],
                          metadata={"fold": 1 + i % 10, "patient_id": f"p{i}"}))
    writer.finalize(sources=[{"kind": "synthetic-nonzero"}], label_names=None)
    return str(out)


@pytest.mark.slow
def test_training_crops_reach_the_model_with_exactly_the_subset(ray_session, tmp_path):
    from ecg_ray.data.stream import train_crops
    from ecg_ray.train.pretrain import method_batches

    store = _nonzero_store(tmp_path / "store")
    dataset, info = train_crops(store, crop=CROP, seed=0, with_labels=True, records_per_task=2_000, shuffle=True)
    assert info.read_tasks >= 5 and info.rows == RECORDS
    recorder = Recorder()
    model = restrict_leads(recorder, SUBSET)
    rows = 0
    for batch in method_batches(dataset, 500, torch.device("cpu"), ("labels",)):
        signal = batch["signal"]
        before = signal.clone()
        model(signal)
        seen = recorder.seen.pop()
        assert torch.equal(signal, before), "the batch itself must not be modified"
        assert (seen[:, DROPPED] == 0).all() and not torch.signbit(seen[:, DROPPED]).any()
        assert torch.equal(seen[:, KEPT], signal[:, KEPT])
        assert (signal.abs() >= 0.25).all()  # the stream delivered real samples in every lead
        rows += len(signal)
    assert rows == RECORDS
