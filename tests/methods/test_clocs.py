"""CLOCS methods (cmsc, cmlc, cmsmlc) and patient-contrastive: their views, positives, loss and config checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ecg_ray.config import load_config
from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.errors import ConfigError
from ecg_ray.losses.clocs import clocs_loss
from ecg_ray.losses.contrastive import contrastive_loss
from ecg_ray.methods import build_method, methods
from ecg_ray.methods.base import synthetic_batch
from tests.refusals import refuse

JOBS = Path(__file__).resolve().parents[2] / "jobs"
NAMES = ("cmsc", "cmlc", "cmsmlc", "patient")


def _method(name: str, **overrides):
    overrides = {"method.name": name, "model.encoder": "xresnet1d50", **overrides}
    method = build_method(load_config(None, overrides), fs=100.0)
    method.set_generator(torch.Generator().manual_seed(0))
    return method


def _signal(b: int, t: int) -> torch.Tensor:
    # every sample distinct: lead l, time s of row i holds i * 1e5 + l * 1e3 + s
    return (torch.arange(b)[:, None, None] * 1e5 + torch.arange(12)[None, :, None] * 1e3
            + torch.arange(t)[None, None, :]).float()


def test_registered_with_their_sections_and_jobs():
    registered = methods()
    for name in NAMES:
        cls = registered[name]
        assert cls.display_name and cls.config_class is not None and cls.encoder_output == "pooled"
        for kind in ("smoke", "pretrain"):
            config = load_config(JOBS / kind / f"{name}.yaml")
            assert config.method.name == name
            build_method(config, fs=100.0)  # the job's settings build (crop, leads, augmentations)
    assert registered["patient"].batch_fields == ("patient_index",)
    assert registered["cmsc"].batch_fields == ("record_index", "store_index")


def test_cmsc_views_are_adjacent_non_overlapping_halves():
    method = _method("cmsc", **{"data.crop": 500})
    x = _signal(3, 500)
    views = method.make_views(x)
    assert views.shape == (3, 2, 12, 250)
    torch.testing.assert_close(views[:, 0], x[..., :250])
    torch.testing.assert_close(views[:, 1], x[..., 250:])
    # adjacent: the second half starts on the sample after the first one ends; together they are the crop
    assert torch.equal(views[:, 1, :, 0] - views[:, 0, :, -1], torch.ones(3, 12))
    assert torch.equal(torch.cat([views[:, 0], views[:, 1]], dim=-1), x)


def test_cmlc_views_keep_one_lead_each():
    method = _method("cmlc", **{"cmlc.leads": ["II", "V2", "aVL", "aVR"]})
    x = _signal(2, 250)
    views = method.make_views(x)
    assert views.shape == (2, 4, 12, 250)
    for v, lead in enumerate(["II", "V2", "aVL", "aVR"]):
        kept = CANONICAL_LEADS.index(lead)
        torch.testing.assert_close(views[:, v, kept], x[:, kept])
        others = [c for c in range(12) if c != kept]
        assert not views[:, v, others].any()


def test_cmsmlc_views_are_lead_major_segments_of_one_lead():
    method = _method("cmsmlc", **{"data.crop": 500, "cmsmlc.leads": ["I", "V6"]})
    x = _signal(2, 500)
    views = method.make_views(x)
    assert views.shape == (2, 4, 12, 250)
    expected = [("I", 0), ("I", 1), ("V6", 0), ("V6", 1)]  # the authors' order: lead, then segment
    for v, (lead, segment) in enumerate(expected):
        kept = CANONICAL_LEADS.index(lead)
        torch.testing.assert_close(views[:, v, kept], x[:, kept, segment * 250:(segment + 1) * 250])
        assert views[:, v].abs().sum(dim=-1).count_nonzero(dim=-1).eq(1).all()


def test_record_ids_unique_over_a_mixture_and_shared_by_crops_of_one_record():
    method = _method("cmsc", **{"data.crop": 500})
    batch = {"record_index": torch.tensor([5, 5, 5, 6]), "store_index": torch.tensor([0, 0, 1, 0], dtype=torch.int16)}
    ids = method.ids(batch).tolist()
    assert ids[0] == ids[1]  # two crops of record 5 of store 0: positives
    assert len({ids[0], ids[2], ids[3]}) == 3  # record 5 of another store, record 6: negatives


def test_patient_ids_group_records_of_one_patient():
    method = _method("patient")
    batch = synthetic_batch(torch.randn(6, 12, 250), method.batch_fields)  # rows 2k, 2k+1 share a patient
    assert method.ids(batch).tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("name,overrides,n_views", [
    ("cmsc", {"data.crop": 500}, 2),
    ("cmlc", {"cmlc.leads": ["II", "V2", "aVL"]}, 3),
    ("cmsmlc", {"data.crop": 500, "cmsmlc.leads": ["II", "V2"]}, 4),
])
def test_loss_is_the_clocs_loss_of_the_projected_views(name, overrides, n_views):
    method = _method(name, **overrides).eval()  # eval: BN uses running stats, so one pass equals another
    x = torch.randn(4, 12, method.config.data.crop, generator=torch.Generator().manual_seed(1))
    batch = synthetic_batch(x, method.batch_fields)
    batch["record_index"] = torch.tensor([0, 1, 1, 2])  # rows 1 and 2: two crops of one record
    with torch.no_grad():
        loss = method(batch)["loss"]
        views = method.make_views(x)
        z = method.projector(method.encoder(views.reshape(4 * n_views, *views.shape[2:]))).reshape(4, n_views, -1)
        expected = clocs_loss(z, torch.tensor([0, 1, 1, 2]), temperature=0.1, gather=False)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    method.settings.loss = "ntxent"
    with torch.no_grad():
        ntxent = method(batch)["loss"]
    assert ntxent.item() == pytest.approx(
        contrastive_loss(z.reshape(4 * n_views, -1), torch.tensor([0, 1, 1, 2]).repeat_interleave(n_views),
                         temperature=0.1, gather=False).item(), rel=1e-5)


def test_patient_views_are_two_augmentations_with_patient_positives():
    method = _method("patient").eval()
    x = torch.randn(4, 12, 250, generator=torch.Generator().manual_seed(2))
    batch = synthetic_batch(x, method.batch_fields)
    generator_state = method.generator.get_state()
    with torch.no_grad():
        loss = method(batch)["loss"]
        method.generator.set_state(generator_state)
        augmented = method.augment(x.unsqueeze(1).expand(-1, 2, -1, -1).reshape(8, 12, 250), method.generator)
        z = method.projector(method.encoder(augmented))
    assert not torch.equal(augmented[0::2], augmented[1::2])  # the two views differ
    expected = contrastive_loss(z, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), temperature=0.1, gather=False)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_uniform_loss_values():
    assert _method("cmsc", **{"data.crop": 500}).uniform_loss(64, 2) == pytest.approx(math.log(128))
    cmlc = _method("cmlc", **{"cmlc.leads": ["II", "V2", "aVL", "aVR"], "cmlc.loss": "ntxent"})
    assert cmlc.uniform_loss(8, 1) == pytest.approx(math.log((4 * 8 - 1) / 3))
    assert _method("patient").uniform_loss(8, 2) == pytest.approx(math.log(2 * 16 - 1))


def test_a_few_steps_lower_the_cmsc_loss():
    torch.manual_seed(0)
    method = _method("cmsc", **{"data.crop": 500, "model.encoder": "xresnet1d50"})
    x = torch.randn(8, 12, 500, generator=torch.Generator().manual_seed(3))
    batch = synthetic_batch(x, method.batch_fields)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = method(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


# --- config errors, before Ray ----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,message", [
    ({"method.name": "cmsc", "data.crop": 251}, "data.crop=251: cmsc cuts each crop into 2 adjacent segments"),
    ({"method.name": "cmsmlc", "data.crop": 251}, "data.crop must be a multiple of 2"),
    ({"method.name": "cmsc", "augmentations": [{"name": "TimeOut"}]}, "cmsc.augment is false"),
    ({"method.name": "patient", "patient.augment": False}, "patient.augment=false"),
])
def test_settings_the_method_cannot_use_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_method(load_config(None, overrides), fs=100.0)


@pytest.mark.parametrize("override,message", [
    ("cmlc.leads=[II, V7]", "cmlc.leads must be distinct lead names"),
    ("cmlc.leads=[II, II]", "cmlc.leads must be distinct lead names"),
    ("cmlc.leads=[II]", "cmlc.leads must be at least 2 leads"),
    ("cmlc.loss=infonce", "cmlc.loss must be one of clocs, ntxent"),
    ("cmlc.temperature=0", "cmlc.temperature must be > 0"),
])
def test_bad_section_values_fail_when_loaded(override, message):
    from ecg_ray.config import parse_override

    key, value = parse_override(override)
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"method.name": "cmlc", key: value})


def test_odd_crop_refused_by_the_cli_before_ray(ptbxl_store, tmp_path, capsys):
    line = refuse(capsys, "pretrain", "--config", JOBS / "smoke" / "cmsc.yaml", "--store", ptbxl_store,
                  "--output", tmp_path / "runs", "--set", "data.crop=333")
    assert "data.crop=333" in line and "multiple of 2" in line
    assert not (tmp_path / "runs").exists()


# Real 2-worker pretraining of every CLOCS method on the PTB-XL sample (loss falls, probe runs): the
# registry-wide tests/train/test_pretrain.py::test_two_worker_pretraining_loss_falls runs each smoke job.
