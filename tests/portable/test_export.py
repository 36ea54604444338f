"""``ecg-ray export RUN --format safetensors --out DIR``: the folder, its config.json and model card, and
loading it in a fresh Python process with the same outputs as the run's checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ecg_ray
from ecg_ray.errors import CheckpointError
from ecg_ray.models import build_encoder
from ecg_ray.portable.spec import CANONICAL_LEADS
from ecg_ray.train.checkpoint import export_encoder, load_state, save_checkpoint
from tests.cli import run_json
from tests.data.synthetic_stores import grouped_store
from tests.portable.conftest import trained_like_weights, write_run

ROOT = Path(__file__).resolve().parents[2]

#: run in a fresh interpreter: load the folder, run the encoder and embed, report what got imported
FRESH_PROCESS = """
import json, sys
import numpy as np, torch
import ecg_ray
folder, inputs, outputs = sys.argv[1:4]
data = np.load(inputs)
encoder = ecg_ray.load_encoder(folder)
with torch.no_grad():
    features = encoder(torch.from_numpy(data["x"])).numpy()
vector = encoder.embed(data["signal"], fs=100.0)
np.savez(outputs, features=features, vector=vector)
print(json.dumps({"modules": sorted(m for m in ("ray", "pandas", "zarr", "pyarrow") if m in sys.modules),
                  "training": encoder.training, "spec": encoder.input_spec.to_dict()}))
"""


def reference_encoder(weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    encoder = build_encoder("xresnet1d50")
    encoder.load_state_dict(weights)
    return encoder.eval()


def test_safetensors_export_loads_in_a_fresh_process_with_the_checkpoints_outputs(run_dir, tmp_path, capsys):
    run, weights = run_dir
    out = tmp_path / "exported"
    summary = run_json(capsys, "export", run, "--out", out, "--format", "safetensors")
    assert (summary["format"], summary["epoch"], summary["out"]) == ("safetensors", 2, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left

    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, size=(3, 12, 250)).astype(np.float32)
    signal = rng.normal(0, 0.3, size=(1000, 12)).astype(np.float32)
    np.savez(tmp_path / "inputs.npz", x=x, signal=signal)
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "inputs.npz"),
                             str(tmp_path / "outputs.npz")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] == []  # no ray, pandas, zarr or pyarrow on the loading path
    assert report["training"] is False
    assert report["spec"]["fs"] == 100.0 and report["spec"]["leads"] == list(CANONICAL_LEADS)

    fresh = np.load(tmp_path / "outputs.npz")
    reference = reference_encoder(weights)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
        # embed of a 10 s record: 7 windows of 250 every 125 samples, features averaged
        windows = torch.from_numpy(np.stack([signal[s:s + 250].T for s in range(0, 751, 125)]))
        expected_vector = reference(windows).mean(0).numpy()
    assert np.abs(fresh["features"] - expected).max() <= 1e-6
    assert np.abs(fresh["vector"] - expected_vector).max() <= 1e-6


def test_config_json_and_model_card(tmp_path):
    store = grouped_store(tmp_path / "store", {"A": 20, "B": 10}, length=300)
    run = tmp_path / "run"
    write_run(run, store=str(store), augmentations=[{"name": "TimeOut"}, {"name": "RandomLeadMask", "p": 0.5}])
    out = tmp_path / "model"
    export_encoder(run, out, format="safetensors")
    config = json.loads((out / "config.json").read_text())
    state_config = load_state(run / "checkpoint_000002")["config"]
    assert config["format"] == "ecg_ray.encoder.safetensors" and config["format_version"] == 1
    expected = {"architecture": "xresnet1d50", "encoder_options": {}, "feature_dim": 512, "output": "pooled",
                "sampling_rate_hz": 100.0, "leads": list(CANONICAL_LEADS), "units": "mV", "input_length": 250,
                "window": 250, "stride": 125, "pooling": "mean", "method": "simclr", "method_display": "SimCLR",
                "epoch": 2, "selection": {"metric": "latest", "value": None}, "lead_masking": True,
                "ecg_ray_version": ecg_ray.__version__, "config": state_config}
    assert {key: config[key] for key in expected} == expected
    assert config["normalization"]["type"] == "none" and "no per-record" in config["normalization"]["detail"]
    corpus = config["training_corpus"]
    assert corpus["available"] is True and corpus["datasets"] == ["a", "b"]
    assert (corpus["records"], corpus["hours"]) == (30, round(30 * 300 / 100 / 3600, 3))
    assert corpus["stores"][0]["path"] == str(store) and corpus["stores"][0]["per_dataset"] == {"a": 20, "b": 10}

    card = (out / "README.md").read_text()
    front, body = card.split("\n---\n", 1)
    assert front.startswith("---\n") and "library_name: ecg_ray" in front and "license: other" in front
    assert '- "ecg"' in front and '- "self-supervised"' in front and '- "simclr"' in front
    for fact in ("# xresnet1d50 ECG encoder (SimCLR)", "| sampling rate | 100 Hz |", "| units | mV |",
                 "I, II, III, aVR, aVL, aVF, V1, V2, V3, V4, V5, V6", "250 samples (2.50 s)",
                 "ecg_ray.load_encoder(", "encoder.embed(signal, fs=500", "yes (RandomLeadMask)", str(store),
                 "a (20), b (10)"):
        assert fact in body, fact
    # the card says lead masking, and the loaded encoder acts on it: a missing lead is zeroed, not refused
    encoder = ecg_ray.load_encoder(out)
    assert encoder.input_spec.lead_masking
    assert encoder.embed(np.zeros((300, 11), np.float32), fs=100, leads=CANONICAL_LEADS[:11]).shape == (512,)


def test_an_unreachable_store_is_recorded_as_the_config_names_it(tmp_path):
    from ecg_ray.portable.export import training_corpus

    corpus = training_corpus({"data": {"stores": [{"path": str(tmp_path / "gone"), "weight": 2.0}]}})
    assert corpus["available"] is False and corpus["records"] is None
    assert corpus["stores"][0]["path"] == str(tmp_path / "gone") and corpus["stores"][0]["weight"] == 2.0
    assert "no such store directory" in corpus["stores"][0]["reason"]


def test_both_formats_load_the_same_encoder(run_dir, tmp_path):
    run, weights = run_dir
    export_encoder(run, tmp_path / "encoder.pt")
    export_encoder(run, tmp_path / "folder", format="safetensors")
    from_torch = ecg_ray.load_encoder(tmp_path / "encoder.pt")
    from_folder = ecg_ray.load_encoder(tmp_path / "folder")
    from_file = ecg_ray.load_encoder(tmp_path / "folder" / "model.safetensors")
    assert list(from_folder.state_dict()) == list(from_torch.state_dict()) == list(weights)
    for encoder in (from_torch, from_folder, from_file):
        assert not encoder.training
        assert all(torch.equal(encoder.state_dict()[k], v) for k, v in weights.items())
    assert from_torch.input_spec == from_folder.input_spec == from_file.input_spec
    x = torch.randn(2, 12, 250)
    with torch.no_grad():
        assert torch.equal(from_torch(x), from_folder(x)) and from_folder(x).shape == (2, 512)


def test_jepa_exports_its_target_encoder(tmp_path):
    run = tmp_path / "run"
    online = write_run(run, method="jepa")
    target = trained_like_weights("xresnet1d50", seed=1)
    checkpoint = run / "checkpoint_000002"
    state = load_state(checkpoint)
    state["model"].update({f"target_encoder.{k}": v for k, v in target.items()})
    save_checkpoint(checkpoint, {k: v for k, v in state.items() if k != "format"}, [])
    export_encoder(run, tmp_path / "jepa", format="safetensors")
    loaded = ecg_ray.load_encoder(tmp_path / "jepa").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in target.items())
    assert not all(torch.equal(loaded[k], v) for k, v in online.items())


def test_export_replaces_only_a_previous_export(run_dir, tmp_path, capsys):
    from ecg_ray.cli import main

    run, _ = run_dir
    out = tmp_path / "model"
    export_encoder(run, out, format="safetensors")
    export_encoder(run, out, format="safetensors")  # a previous export is replaced
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match="not an ecg_ray safetensors export"):
        export_encoder(run, out, format="safetensors")
    assert (out / "README.md").exists()  # the refused folder is left as it was
    with pytest.raises(CheckpointError, match="lies inside the input"):
        export_encoder(run, run / "model", format="safetensors")
    assert main(["export", str(run), "--out", str(out), "--format", "safetensors"]) == 2
    assert "refusing to replace" in capsys.readouterr().err


def test_export_to_and_load_from_s3(run_dir, s3_bucket):
    run, weights = run_dir
    uri = f"{s3_bucket}/models/simclr"
    summary = export_encoder(run, uri, format="safetensors")
    assert summary["out"] == uri
    encoder = ecg_ray.load_encoder(uri)
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in weights.items())
    export_encoder(run, uri, format="safetensors")  # replacing an export on S3
    assert ecg_ray.load_encoder(f"{uri}/model.safetensors").input_spec.fs == 100.0


def test_encoder_file_readers_take_the_folder(run_dir, tmp_path):
    """``evaluate --encoder`` and ``embed --encoder`` read encoder files through read_encoder_file."""
    from ecg_ray.portable.encoder_file import read_encoder_file

    run, weights = run_dir
    export_encoder(run, tmp_path / "encoder.pt")
    export_encoder(run, tmp_path / "folder", format="safetensors")
    from_torch = read_encoder_file(str(tmp_path / "encoder.pt"))
    from_folder = read_encoder_file(str(tmp_path / "folder"))
    for key in ("format", "encoder", "method", "epoch", "selection", "fs", "input_length", "input_spec", "config"):
        assert from_folder[key] == from_torch[key], key
    assert all(torch.equal(from_folder["state_dict"][k], v) for k, v in weights.items())
    with pytest.raises(CheckpointError, match="is a directory, not an encoder file"):
        read_encoder_file(str(run))  # a folder that is not an export keeps its message
    # a torch export never overwrites the weights file of a folder
    with pytest.raises(Exception, match="not an ecg_ray encoder export"):
        export_encoder(run, tmp_path / "folder" / "model.safetensors")
