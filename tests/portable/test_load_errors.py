"""``ecg_ray.load_encoder`` on folders that are not a loadable safetensors export: one clear CheckpointError each."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

import ecg_ray
from ecg_ray.errors import CheckpointError
from ecg_ray.train.checkpoint import export_encoder


@pytest.fixture
def exported(run_dir, tmp_path):
    out = tmp_path / "model"
    export_encoder(run_dir[0], out, format="safetensors")
    return out


def edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_missing_files(exported, tmp_path):
    with pytest.raises(CheckpointError, match="encoder file not found"):
        ecg_ray.load_encoder(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match="no such folder"):
        ecg_ray.load_encoder(tmp_path / "nothing" / "model.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no config.json; not an ecg_ray safetensors export"):
        ecg_ray.load_encoder(empty)
    (exported / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors beside its config.json"):
        ecg_ray.load_encoder(exported)


def test_another_format_or_version(exported):
    edit_config(exported, format_version=2)
    with pytest.raises(CheckpointError, match="format_version 2, this ecg_ray reads 1; upgrade ecg_ray"):
        ecg_ray.load_encoder(exported)
    edit_config(exported, format="something.else", format_version=1)
    with pytest.raises(CheckpointError, match="format 'something.else', not 'ecg_ray.encoder.safetensors'"):
        ecg_ray.load_encoder(exported)
    (exported / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable JSON"):
        ecg_ray.load_encoder(exported)


def test_unknown_architecture_and_inputs_it_cannot_prepare(exported):
    edit_config(exported, architecture="resnet9000")
    with pytest.raises(CheckpointError, match="encoder 'resnet9000' is not one ecg_ray builds"):
        ecg_ray.load_encoder(exported)
    edit_config(exported, architecture="xresnet1d50", units="uV")
    with pytest.raises(CheckpointError, match="input this ecg_ray cannot prepare: units 'uV'"):
        ecg_ray.load_encoder(exported)
    edit_config(exported, units="mV", encoder_options={"depth": 3})
    with pytest.raises(CheckpointError, match="does not take options"):
        ecg_ray.load_encoder(exported)


def test_weights_that_do_not_fit(exported, tmp_path):
    weights = load_file(exported / "model.safetensors")
    first = next(iter(weights))
    save_file({k: v for k, v in weights.items() if k != first}, exported / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"the weights do not fit encoder xresnet1d50 .1 missing: {first}"):
        ecg_ray.load_encoder(exported)
    edit_config(exported, architecture="xresnet1d101")
    save_file(weights, exported / "model.safetensors")
    with pytest.raises(CheckpointError, match="the weights do not fit encoder xresnet1d101"):
        ecg_ray.load_encoder(exported)


def test_a_truncated_weights_file(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot load, the file is truncated or not safetensors"):
        ecg_ray.load_encoder(copy)
