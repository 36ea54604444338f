"""k-NN and logistic-regression probes against hand-written references, and ``evaluate --mode knn|logreg``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecg_ray.cli import main
from ecg_ray.evaluation import embedding_probes
from ecg_ray.evaluation.embedding_probes import fit_logreg, knn_scores, logreg_gradient_norm, logreg_scores
from ecg_ray.evaluation.metrics import macro_auc
from tests.cli import run_json

JOBS = Path(__file__).resolve().parents[2] / "jobs" / "smoke"


def _brute_force_knn(train_x, train_y, query_x, k, temperature):
    """One query at a time: cosine similarities, the k largest, weights exp(s / T), weighted label mean."""
    out = []
    for q in query_x:
        sims = np.array([float(q @ t) / (np.linalg.norm(q) * np.linalg.norm(t)) for t in train_x])
        top = np.argsort(-sims, kind="stable")[:k]
        weights = np.exp(sims[top] / temperature)
        out.append((weights[:, None] * train_y[top]).sum(0) / weights.sum())
    return np.array(out)


@pytest.mark.parametrize("block", [1024, 7])
def test_knn_scores_match_a_brute_force_loop(monkeypatch, block):
    monkeypatch.setattr(embedding_probes, "QUERY_BLOCK", block)
    rng = np.random.default_rng(0)
    train_x, query_x = rng.standard_normal((60, 8)), rng.standard_normal((23, 8))
    train_y = (rng.random((60, 3)) < 0.3).astype(np.uint8)
    ks = [1, 3, 10, 60, 500]  # 500 > 60 training records: all of them
    scores = knn_scores(train_x, train_y, query_x, ks, temperature=0.5)
    for k in ks:
        expected = _brute_force_knn(train_x, train_y, query_x, min(k, 60), 0.5)
        np.testing.assert_allclose(scores[k], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores[1], train_y[np.argmax(_cosines(query_x, train_x), 1)])


def _cosines(a, b):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T


def test_knn_scores_do_not_overflow_at_a_small_temperature():
    rng = np.random.default_rng(1)
    train_x = rng.standard_normal((30, 4))
    scores = knn_scores(train_x, np.eye(30)[:, :2], train_x[:5] * 3, [5], temperature=0.001)[5]
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores, np.eye(30)[:5, :2], atol=1e-6)  # the record itself dominates


def _newton_reference(z, y, c, iterations=50):
    """Hand-written Newton's method for one label: mean log-loss + ||w||^2 / (2 C n), bias unpenalised."""
    n, d = z.shape
    a = np.c_[z, np.ones(n)]
    theta = np.zeros(d + 1)
    penalty = np.r_[np.full(d, 1.0 / (c * n)), 0.0]
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(a @ theta)))
        grad = a.T @ (p - y) / n + penalty * theta
        hess = (a * (p * (1 - p))[:, None]).T @ a / n + np.diag(penalty)
        theta -= np.linalg.solve(hess, grad)
    return theta[:d], theta[d]


def test_logreg_matches_newtons_method_per_label():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 5)) * [1, 2, 0.5, 3, 1] + [0, 1, -2, 0, 5]
    truth = rng.standard_normal((5, 2))
    y = (rng.random((200, 2)) < 1 / (1 + np.exp(-(x - x.mean(0)) / x.std(0) @ truth))).astype(np.uint8)
    for c in (0.01, 1.0):
        model = fit_logreg(x, y, c, max_iter=500)
        z = (x - x.mean(0)) / x.std(0)
        for label in range(2):
            weight, bias = _newton_reference(z, y[:, label].astype(float), c)
            np.testing.assert_allclose(model["weight"][:, label], weight, atol=2e-4)
            assert model["bias"][label] == pytest.approx(bias, abs=2e-4)
        assert logreg_gradient_norm(model, x, y, c) < 1e-4
    # stronger regularisation, smaller weights
    assert np.abs(fit_logreg(x, y, 0.001)["weight"]).sum() < np.abs(fit_logreg(x, y, 10.0)["weight"]).sum()


def test_logreg_separates_separable_labels():
    rng = np.random.default_rng(3)
    y = (rng.random((400, 3)) < [0.5, 0.3, 0.1]).astype(np.uint8)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    x[:, :3] += 4.0 * (2.0 * y - 1.0)  # label j is separable along feature j, with a margin
    model = fit_logreg(x[:300], y[:300], c=10.0)
    auc = macro_auc(y[300:], logreg_scores(model, x[300:]))
    assert min(auc.per_label) > 0.999
    assert logreg_scores(model, x[:3]).dtype == np.float32 and logreg_scores(model, x[:3]).shape == (3, 3)


def test_probe_settings_are_checked(tmp_path, capsys):
    for override, message in (("eval.knn_k=[0, 5]", "eval.knn_k must be"), ("eval.logreg_c=[-1]", "eval.logreg_c"),
                              ("eval.knn_temperature=0", "eval.knn_temperature")):
        code = main(["evaluate", "--mode", "knn", "--store", str(tmp_path), "--set", override, "--output",
                     str(tmp_path)])
        assert code == 2 and message in capsys.readouterr().err
    emb = tmp_path / "e.parquet"
    emb.write_bytes(b"")
    code = main(["evaluate", "--mode", "knn", "--embeddings", str(emb), "--encoder", str(emb), "--output",
                 str(tmp_path)])
    assert code == 2 and "drop --encoder" in capsys.readouterr().err
    code = main(["evaluate", "--mode", "logreg", "--embeddings", str(emb), "--set", "noise.types=[gaussian]",
                 "--set", "noise.snr_db=[0]", "--output", str(tmp_path)])
    assert code == 2 and "drop noise.types" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["knn", "logreg"])
def test_evaluate_on_cached_embeddings_of_the_sample(mode, ray_session, ptbxl_store, sample_embeddings, tmp_path,
                                                     capsys):
    from ecg_ray.data.store import EcgStore
    from ecg_ray.evaluation.predictions import load_predictions
    from ecg_ray.evaluation.scoring import score

    summary = run_json(capsys, "evaluate", "--mode", mode, "--embeddings", sample_embeddings, "--store", ptbxl_store,
                       "--config", JOBS / "eval-linear.yaml", "--output", tmp_path)
    for key in ("mode", "val_macro_auc", "test_macro_auc", "test_macro_auc_ci", "test_macro_auc_reference",
                "labels_scored", "labels_excluded", "best_epoch", "selected", "run_dir"):
        assert key in summary, key
    assert summary["mode"] == mode and summary["epochs"] == (6 if mode == "knn" else 5)
    grid = [1, 5, 10, 20, 50, 100] if mode == "knn" else [0.001, 0.01, 0.1, 1.0, 10.0]
    assert list(summary["selected"].values())[0] == grid[summary["best_epoch"]]
    run_dir = Path(summary["run_dir"])
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["val_macro_auc"] == max(h["val_macro_auc"] for h in evaluation["history"])
    # the same scoring as every other mode: recomputed from the saved predictions
    store = EcgStore(ptbxl_store)
    predictions = load_predictions(run_dir)
    index = {str(i): k for k, i in enumerate(store.records["id"].astype(str))}
    records = np.array([index[i] for i in predictions.record_ids])
    assert sorted(store.records["fold"].to_numpy()[records].tolist()) == [10] * len(records)
    again = score(store, records, predictions.probs, "all")
    assert again["macro_auc"] == pytest.approx(summary["test_macro_auc"])
    assert again["labels_scored"] == summary["labels_scored"] and summary["labels_scored"] + summary["labels_skipped"] == 71
    low, high = summary["test_macro_auc_ci"]
    assert low <= summary["test_macro_auc"] <= high
    assert 0.0 <= summary["test_macro_auc"] <= 1.0


@pytest.fixture(scope="module")
def sample_embeddings(ray_session, ptbxl_store, tmp_path_factory) -> Path:
    """The PTB-XL sample embedded once by the tiny test encoder (random weights, 16 wide)."""
    from ecg_ray.embedding import EncoderSource, embed_store
    from ecg_ray.models.registry import _ENCODERS, register_encoder
    from tests.embedding.tiny import NAME, TinyEncoder

    register_encoder(NAME)(TinyEncoder)
    try:
        out = tmp_path_factory.mktemp("emb") / "sample.parquet"
        embed_store(EncoderSource(name=NAME, state_dict=None, fs=100.0, input_length=250, seed=0), ptbxl_store,
                    str(out), progress=False)
    finally:
        _ENCODERS.pop(NAME, None)
    return out


def test_knn_embeds_the_store_first_and_compare_pairs_the_runs(ray_session, ptbxl_store, sample_embeddings,
                                                               tmp_path, capsys):
    """Without --embeddings the store is embedded into the run directory (same windows: same result)."""
    import torch

    from ecg_ray.models.registry import _ENCODERS, register_encoder
    from ecg_ray.portable.formats import ENCODER_FORMAT
    from tests.embedding.tiny import NAME, TinyEncoder

    register_encoder(NAME)(TinyEncoder)
    try:
        torch.manual_seed(0)
        encoder = tmp_path / "tiny.pt"
        torch.save({"format": ENCODER_FORMAT, "encoder": NAME, "state_dict": TinyEncoder().state_dict(),
                    "method": "simclr", "epoch": 0, "fs": 100.0, "input_length": 250, "config": {},
                    "ecg_ray_version": "test"}, encoder)
        cached = run_json(capsys, "evaluate", "--mode", "knn", "--embeddings", sample_embeddings, "--store",
                          ptbxl_store, "--config", JOBS / "eval-linear.yaml", "--output", tmp_path / "a")
        fresh = run_json(capsys, "evaluate", "--mode", "knn", "--encoder", encoder, "--store", ptbxl_store,
                         "--config", JOBS / "eval-linear.yaml", "--output", tmp_path / "b")
    finally:
        _ENCODERS.pop(NAME, None)
    assert (Path(fresh["run_dir"]) / "embeddings.parquet").is_file()
    assert fresh["test_macro_auc"] == pytest.approx(cached["test_macro_auc"], abs=1e-6)
    evaluation = json.loads((Path(fresh["run_dir"]) / "evaluation.json").read_text())
    assert evaluation["method"] == "simclr" and evaluation["encoder"] == NAME
    compared = run_json(capsys, "compare", cached["run_dir"], fresh["run_dir"], "--bootstrap", "50")
    assert compared["records"] == evaluation["test_records"]
