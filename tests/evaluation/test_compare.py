"""Per-record predictions on disk and the paired bootstrap comparison of two evaluations."""

from __future__ import annotations

import json
import time
import zipfile

import numpy as np
import pytest

from ecg_ray.errors import EcgRayError
from ecg_ray.evaluation.compare import (
    ComparisonError,
    compare_evaluations,
    format_comparison,
    paired_bootstrap,
)
from ecg_ray.evaluation.predictions import (
    PREDICTIONS_FILE,
    Predictions,
    PredictionsError,
    find_predictions,
    load_predictions,
    save_predictions,
)

NAMES = ["NORM", "MI", "STTC", "AFIB", "RARE"]


def make(n: int = 60, seed: int = 0, signal: float = 0.0, noise_seed: int | None = None) -> Predictions:
    """Labels from ``seed`` (the same test set for equal seeds); probabilities from noise plus
    ``signal`` times the labels, so a larger ``signal`` is a better model."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, len(NAMES))) < np.array([0.4, 0.25, 0.2, 0.1, 0.0])
    y[:2, 4] = True  # RARE: 2 positives
    noise = np.random.default_rng(seed if noise_seed is None else noise_seed).normal(size=y.shape)
    probs = 1 / (1 + np.exp(-(np.round(noise, 1) + signal * y)))
    return Predictions(record_ids=[f"rec{i:04d}" for i in range(n)], probs=probs, labels=y,
                       label_names=NAMES, label_set="all")


def brute_auc(y, s):
    pos, neg = s[y.astype(bool)], s[~y.astype(bool)]
    if len(pos) == 0 or len(neg) == 0:
        return None
    return float(((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (len(pos) * len(neg)))


def brute_values(p: Predictions, rows, labels):
    """Per-resample macro AUC over a fixed label set, unscorable counting 0.5, by brute force."""
    out = []
    for r in rows:
        aucs = [brute_auc(p.labels[r, j], p.probs[r, j].astype(np.float64)) for j in labels]
        out.append(np.mean([0.5 if a is None else a for a in aucs]))
    return np.array(out)


def documented_draws(n, n_boot, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for start in range(0, n_boot, 128):
        rows.extend(rng.integers(0, n, size=(min(128, n_boot - start), n)))
    return rows


def brute_p(diff):
    n = len(diff)
    low = (sum(1 for d in diff if d <= 0) + 1) / (n + 1)
    high = (sum(1 for d in diff if d >= 0) + 1) / (n + 1)
    return min(1.0, 2 * min(low, high))


# ------------------------------------------------------------------------------------ predictions on disk


def test_predictions_round_trip(tmp_path):
    p = make(12)
    save_predictions(tmp_path / "run" / PREDICTIONS_FILE, p)
    for source in (tmp_path / "run", tmp_path / "run" / PREDICTIONS_FILE):
        q = load_predictions(source)
        assert q.record_ids.tolist() == [f"rec{i:04d}" for i in range(12)]
        assert q.probs.dtype == np.float32 and q.labels.dtype == np.uint8
        assert np.array_equal(q.probs, p.probs) and np.array_equal(q.labels, p.labels)
        assert q.label_names == NAMES and q.label_set == "all"
    # A directory path gets the standard file name; evaluation.json beside it also finds it.
    save_predictions(tmp_path / "other", p)
    (tmp_path / "other" / "evaluation.json").write_text("{}")
    assert find_predictions(tmp_path / "other" / "evaluation.json") == str(tmp_path / "other" / PREDICTIONS_FILE)
    # Below a run directory (the checkpoint folder of a Ray run), the one file there is found.
    save_predictions(tmp_path / "ray" / "checkpoint_000000" / PREDICTIONS_FILE, p)
    assert find_predictions(tmp_path / "ray").endswith(f"checkpoint_000000/{PREDICTIONS_FILE}")
    # No pickle inside: every array loads with allow_pickle=False as plain dtypes.
    with np.load(tmp_path / "run" / PREDICTIONS_FILE, allow_pickle=False) as npz:
        assert npz["record_ids"].dtype.kind == "U" and npz["label_names"].dtype.kind == "U"


def test_predictions_validate_shapes():
    with pytest.raises(ValueError, match="probs has shape"):
        Predictions(["a", "b"], np.zeros((2, 3)), np.zeros((2, 2)), ["x", "y"], "all")
    with pytest.raises(ValueError, match="0/1"):
        Predictions(["a"], np.zeros((1, 1)), np.full((1, 1), 2), ["x"], "all")


def test_load_errors_name_the_path_and_the_cause(tmp_path):
    with pytest.raises(PredictionsError, match="not found"):
        load_predictions(tmp_path / "nowhere")
    old = tmp_path / "old_run"
    old.mkdir()
    (old / "evaluation.json").write_text("{}")
    for source in (old, old / "evaluation.json"):
        with pytest.raises(PredictionsError, match=r"no test_predictions\.npz.*re-run") as info:
            load_predictions(source)
        assert str(old) in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictionsError, match="not an evaluation run"):
        load_predictions(tmp_path / "empty")
    corrupt = tmp_path / "corrupt" / PREDICTIONS_FILE
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(PredictionsError, match="corrupt or unreadable") as info:
        load_predictions(corrupt)
    assert str(corrupt) in str(info.value)
    # A pickled object array is refused, not executed.
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format_version=1, record_ids=np.array(["a"], dtype=object), probs=np.zeros((1, 1)),
             labels=np.zeros((1, 1)), label_names=np.array(["x"]), label_set=np.array("all"))
    with pytest.raises(PredictionsError, match="corrupt or unreadable"):
        load_predictions(pickled)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(PredictionsError, match="no format_version, label_names"):
        load_predictions(foreign)
    newer = tmp_path / "newer.npz"
    np.savez(newer, format_version=99, record_ids=np.array(["a"]), probs=np.zeros((1, 1)),
             labels=np.zeros((1, 1)), label_names=np.array(["x"]), label_set=np.array("all"))
    with pytest.raises(PredictionsError, match="newer"):
        load_predictions(newer)
    save_predictions(tmp_path / "tune" / "trial_a" / PREDICTIONS_FILE, make(4))
    save_predictions(tmp_path / "tune" / "trial_b" / PREDICTIONS_FILE, make(4))
    with pytest.raises(PredictionsError, match="2 test_predictions.npz files"):
        load_predictions(tmp_path / "tune")
    assert issubclass(PredictionsError, EcgRayError) and issubclass(ComparisonError, EcgRayError)
    assert zipfile.is_zipfile(tmp_path / "tune" / "trial_a" / PREDICTIONS_FILE)  # savez_compressed


# ------------------------------------------------------------------------------------ paired bootstrap


def test_identical_predictions_differ_by_exactly_zero():
    p = make(80)
    result = paired_bootstrap(p, p, n_boot=200, seed=1)
    for scale in (result, result["reference_scale"]):
        assert scale["difference"] == 0.0
        assert scale["ci"] == [0.0, 0.0]
        assert scale["p_value"] == 1.0
        assert scale["significant"] is False
    assert all(r["difference"] == 0.0 for r in result["per_label"])


def test_clearly_better_model_is_significant():
    # a: pure noise; b: labels plus small noise. Every resample favours b.
    a = make(300, seed=4, signal=0.0)
    b = make(300, seed=4, signal=4.0, noise_seed=99)
    result = paired_bootstrap(a, b, n_boot=500, seed=0)
    assert result["difference"] > 0.3
    assert result["ci"][0] > 0
    assert result["p_value"] < 0.01
    assert result["p_value"] == pytest.approx(2 / 501)  # no resample with b <= a: the floor
    assert result["significant"] is True
    assert result["reference_scale"]["ci"][0] > 0 and result["reference_scale"]["p_value"] < 0.01
    swapped = paired_bootstrap(b, a, n_boot=500, seed=0)
    assert swapped["difference"] == pytest.approx(-result["difference"])
    assert swapped["ci"] == pytest.approx([-result["ci"][1], -result["ci"][0]])


def test_paired_bootstrap_equals_brute_force_on_both_scales():
    # Weakly different models so the difference straddles 0 and the p-value is not at its floor.
    a = make(50, seed=2, signal=0.8, noise_seed=10)
    b = make(50, seed=2, signal=1.0, noise_seed=11)
    result = paired_bootstrap(a, b, n_boot=300, seed=9, min_test_positives=3, alpha=0.1)
    assert result["labels_compared"] == ["NORM", "MI", "STTC", "AFIB"]  # RARE has 2 positives
    assert result["labels_excluded"] == ["RARE"]
    assert (result["records"], result["n_boot"], result["seed"]) == (50, 300, 9)
    rows = documented_draws(50, 300, 9)
    for key, labels in ((None, [0, 1, 2, 3]), ("reference_scale", [0, 1, 2, 3, 4])):
        scale = result if key is None else result[key]
        diff = brute_values(b, rows, labels) - brute_values(a, rows, labels)
        assert scale["ci"] == pytest.approx(list(np.quantile(diff, [0.05, 0.95])), abs=1e-12)
        assert scale["p_value"] == pytest.approx(brute_p(diff))
        assert 0.02 < scale["p_value"] < 1  # an informative case, not a floor or a cap
        point = [brute_auc(m.labels[:, j], m.probs[:, j].astype(np.float64)) for m in (a, b) for j in labels]
        point = [0.5 if v is None else v for v in point]
        k = len(labels)
        assert scale["macro_auc_a"] == pytest.approx(np.mean(point[:k]))
        assert scale["macro_auc_b"] == pytest.approx(np.mean(point[k:]))
        assert scale["difference"] == pytest.approx(np.mean(point[k:]) - np.mean(point[:k]))
    # Share of (resample, label) cells with one class: brute force over the same draws.
    for share, labels in ((result["unscorable_share"], [0, 1, 2, 3]),
                          (result["reference_scale"]["unscorable_share"], [0, 1, 2, 3, 4])):
        cells = [len(set(a.labels[r, j].tolist())) < 2 for r in rows for j in labels]
        assert share == pytest.approx(np.mean(cells))
    assert result["reference_scale"]["unscorable_share"] > result["unscorable_share"]  # RARE is included
    per = {r["label"]: r for r in result["per_label"]}
    assert list(per) == ["NORM", "MI", "STTC", "AFIB"]
    assert per["MI"]["auc_b"] == pytest.approx(brute_auc(b.labels[:, 1], b.probs[:, 1].astype(np.float64)))
    assert per["MI"]["difference"] == pytest.approx(per["MI"]["auc_b"] - per["MI"]["auc_a"])


def test_rows_are_aligned_by_record_id():
    a = make(70, seed=3, signal=1.0, noise_seed=5)
    b = make(70, seed=3, signal=1.5, noise_seed=6)
    order = np.random.default_rng(0).permutation(70)
    shuffled = Predictions(b.record_ids[order], b.probs[order], b.labels[order], NAMES, "all")
    assert paired_bootstrap(a, shuffled, n_boot=100) == paired_bootstrap(a, b, n_boot=100)


def test_refuses_different_records_labels_or_label_sets():
    a = make(40)
    fewer = Predictions(a.record_ids[:38], a.probs[:38], a.labels[:38], NAMES, "all")
    with pytest.raises(ComparisonError, match=r"different test records: a has 40, b has 38.*'rec0038'"):
        paired_bootstrap(a, fewer)
    renamed = Predictions(np.where(a.record_ids == "rec0000", "x0", a.record_ids), a.probs, a.labels, NAMES, "all")
    with pytest.raises(ComparisonError, match=r"only in a: 1 \('rec0000'\), only in b: 1 \('x0'\)"):
        paired_bootstrap(a, renamed)
    duplicated = Predictions(np.r_[a.record_ids[:-1], a.record_ids[:1]], a.probs, a.labels, NAMES, "all")
    with pytest.raises(ComparisonError, match="duplicated record ids"):
        paired_bootstrap(duplicated, a)
    other_names = Predictions(a.record_ids, a.probs, a.labels, [*NAMES[:4], "PVC"], "all")
    with pytest.raises(ComparisonError, match=r"different label names.*only in a: 1 \('RARE'\).*'PVC'"):
        paired_bootstrap(a, other_names)
    reordered = Predictions(a.record_ids, a.probs, a.labels, NAMES[::-1], "all")
    with pytest.raises(ComparisonError, match="different order"):
        paired_bootstrap(a, reordered)
    other_set = Predictions(a.record_ids, a.probs, a.labels, NAMES, "diagnostic")
    with pytest.raises(ComparisonError, match="different label sets"):
        paired_bootstrap(a, other_set)
    labels = a.labels.copy()
    labels[5, 0] ^= 1
    with pytest.raises(ComparisonError, match=r"label matrices differ on 1 of 40.*'rec0005'"):
        paired_bootstrap(a, Predictions(a.record_ids, a.probs, labels, NAMES, "all"))
    with pytest.raises(ComparisonError, match="no label has >= 100 positives"):
        paired_bootstrap(a, a, min_test_positives=100)
    probs = a.probs.copy()
    probs[0, 0] = np.nan
    with pytest.raises(ComparisonError, match="b: 1 non-finite"):
        paired_bootstrap(a, Predictions(a.record_ids, probs, a.labels, NAMES, "all"))


def test_compare_evaluations_reads_variants_and_formats(tmp_path):
    for name, signal, noise in (("supervised", 0.5, 1), ("simclr", 2.0, 2)):
        run = tmp_path / name / "checkpoint_000003"
        save_predictions(run / PREDICTIONS_FILE, make(120, seed=8, signal=signal, noise_seed=noise))
        (run / "evaluation.json").write_text(json.dumps({"variant": f"{name}-linear", "test_macro_auc": 0.9}))
    save_predictions(tmp_path / "bare.npz", make(120, seed=8))
    result = compare_evaluations(tmp_path / "supervised", tmp_path / "simclr", n_boot=200, seed=2,
                                 min_test_positives=5)
    assert result["a"]["variant"] == "supervised-linear" and result["b"]["variant"] == "simclr-linear"
    assert result["a"]["source"].endswith(f"supervised/checkpoint_000003/{PREDICTIONS_FILE}")
    assert result["difference"] > 0 and result["significant"] is True
    assert result["labels_excluded"] == ["RARE"]
    for key in ("records", "labels_compared", "labels_excluded", "n_boot", "seed", "macro_auc_a", "macro_auc_b",
                "difference", "ci", "p_value", "significant", "reference_scale", "per_label", "a", "b"):
        assert key in result
    json.dumps(result)  # plain types only, so the CLI can write it as JSON
    text = format_comparison(result)
    assert "supervised-linear" in text and "simclr-linear" in text and "RARE" in text
    assert f"{result['difference']:+.4f}" in text and "95% CI" in text
    assert "reference: all 5" in text
    bare = compare_evaluations(tmp_path / "bare.npz", tmp_path / "simclr", n_boot=50)
    assert bare["a"]["variant"] is None and bare["a"]["evaluation"] is None
    assert "(unnamed)" in format_comparison(bare)


def test_speed_of_a_ptbxl_sized_comparison():
    # PTB-XL "all": about 2,200 test records and 71 labels, many of them rare.
    rng = np.random.default_rng(0)
    n, n_labels = 2200, 71
    y = rng.random((n, n_labels)) < np.geomspace(0.002, 0.45, n_labels)
    ids, names = [f"{i:05d}" for i in range(n)], [f"L{j}" for j in range(n_labels)]
    a = Predictions(ids, rng.random((n, n_labels)), y, names, "all")
    b = Predictions(ids, 1 / (1 + np.exp(-(rng.normal(size=y.shape) + y))), y, names, "all")
    start = time.perf_counter()
    result = paired_bootstrap(a, b, n_boot=1000, seed=0, min_test_positives=10)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"paired bootstrap took {elapsed:.1f} s"  # about 0.4 s on a 2-core machine
    assert result["significant"] and len(result["labels_compared"]) + len(result["labels_excluded"]) == 71


def test_compare_command(tmp_path, capsys):
    """``ecg-ray compare A B --json``: exit 0 with the result; runs on other test records: exit 2, named."""
    from ecg_ray.cli import main

    for name, signal, noise, n in (("a", 0.5, 1, 120), ("b", 2.0, 2, 120), ("other", 2.0, 2, 100)):
        save_predictions(tmp_path / name / PREDICTIONS_FILE, make(n, seed=8, signal=signal, noise_seed=noise))
        (tmp_path / name / "evaluation.json").write_text(json.dumps({"variant": name}))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "evaluation.json"), "--bootstrap", "200",
                 "--min-test-positives", "5", "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["significant"] is True and result["difference"] > 0 and result["n_boot"] == 200
    assert result["labels_excluded"] == ["RARE"] and "95% CI" in out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "other")]) == 2
    assert "ecg-ray compare: error:" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--bootstrap", "0"]) == 2
