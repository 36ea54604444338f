"""Markdown + PNG report from fake result artefacts: tables, plots, empty and corrupt inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ecg_ray.report import PUBLISHED, fmt_auc_ci, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FRACTIONS = [0.01, 0.1, 1.0]


def fake_results(path: Path) -> None:
    rows = []
    for v, (variant, mode, method) in enumerate([("simclr linear", "linear", "simclr"),
                                                 ("supervised", "supervised", None)]):
        for f, fraction in enumerate(FRACTIONS):
            test = 0.80 + 0.05 * f + 0.02 * v
            rows.append({"data.label_fraction": fraction, "optim.lr": 1e-3, "eval.mode": mode,
                         "model.encoder": "xresnet1d50", "method.name": method, "variant": variant,
                         "val_macro_auc": test - 0.01, "test_macro_auc": test,
                         "test_macro_auc_ci_low": test - 0.011, "test_macro_auc_ci_high": test + 0.011,
                         "labels_scored": 71, "best_epoch": 7, "run_dir": f"/runs/{v}{f}",
                         "trial_id": f"t{v}{f}", "status": "TERMINATED"})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)


def fake_robustness(path: Path) -> None:
    rows = []
    for v, variant in enumerate(["simclr linear", "supervised"]):
        rows.append({"variant": variant, "noise_type": "none", "snr_db": math.inf, "test_macro_auc": 0.9 + 0.01 * v,
                     "trial_id": f"t{v}"})
        for noise in ["baseline_wander", "powerline"]:
            for snr in [0.0, 10.0]:
                rows.append({"variant": variant, "noise_type": noise, "snr_db": snr,
                             "test_macro_auc": 0.7 + 0.01 * snr + 0.01 * v, "trial_id": f"t{v}"})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)


def fake_evaluation(run_dir: Path, mode: str, method: str | None, test: float) -> None:
    """A summary of a run on the paper's protocol (PTB-XL store, folds 1-8 / 9 / 10, all 71 labels)."""
    run_dir.mkdir(parents=True)
    summary = {"mode": mode, "variant": f"{method} {mode}" if method else mode, "method": method,
               "encoder": "xresnet1d50", "val_macro_auc": test - 0.005, "test_macro_auc": test,
               "test_macro_auc_ci": [test - 0.011, test + 0.011], "labels_scored": 71, "best_epoch": 12,
               "per_label_auc": {"NORM": 0.95, "IMI": 0.88}, "run_dir": str(run_dir),
               "store": "/data/stores/ptbxl", "test_datasets": {"ptbxl": 2198}, "train_folds": list(range(1, 9)),
               "val_folds": [9], "test_folds": [10], "label_set": "all", "n_labels": 71,
               # Every label of the full test fold has positives, so both scales agree here.
               "test_macro_auc_reference": test, "min_test_positives": 1, "labels_excluded": [], "seed": 0}
    (run_dir / "evaluation.json").write_text(json.dumps(summary))


def fake_pretraining(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "ecg_ray_config.yaml").write_text(yaml.safe_dump({"method": {"name": "simclr"},
                                                                  "model": {"encoder": "xresnet1d50"}}))
    history = [{"epoch": e, "loss": 5.0 - 0.3 * e, "lr": 1e-3, "samples_per_s": 200.0 + e,
                "val_macro_auc": 0.7 + 0.02 * e} for e in range(6)]
    # Two kept checkpoints: the report must use the newer one (longer history).
    for name, length in [("checkpoint_2026-01-01_00-00-01.000000", 3), ("checkpoint_2026-01-01_00-00-02.000000", 6)]:
        (run_dir / name).mkdir()
        (run_dir / name / "history.json").write_text(json.dumps(history[:length]))


def check_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > 5000, (path, len(data))
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 300, image.shape


@pytest.fixture()
def artefacts(tmp_path) -> Path:
    fake_results(tmp_path / "sweeps" / "label_eff" / "results.parquet")
    fake_robustness(tmp_path / "sweeps" / "noise" / "robustness.parquet")
    fake_evaluation(tmp_path / "eval" / "simclr-linear", "linear", "simclr", 0.8812)
    fake_evaluation(tmp_path / "eval" / "supervised", "supervised", None, 0.9204)
    fake_pretraining(tmp_path / "runs" / "simclr-20260101-000000")
    return tmp_path


def test_full_report(artefacts):
    out = write_report(artefacts)
    assert out == artefacts / "report" / "report.md"
    text = out.read_text()
    assert "1 results table (6 trials), 1 robustness table, 2 evaluation summaries, 1 pretraining run" in text
    for variant in ("simclr linear", "supervised"):  # from the results and evaluation summaries
        assert variant in text
    # Results: variant x label fraction with CI, fractions as percentages.
    assert "| variant | 1% labels | 10% labels | 100% labels |" in text
    assert fmt_auc_ci(0.90, 0.889, 0.911) == "0.900 [0.889, 0.911]"
    assert "0.900 [0.889, 0.911]" in text and "0.920 [0.909, 0.931]" in text
    # Robustness table: clean column and one column per SNR.
    assert "| variant | noise | clean | 0 dB | 10 dB |" in text
    assert "| supervised | powerline | 0.910 | 0.710 | 0.810 |" in text
    # Paper layout with our numbers and the published reference beside them.
    assert "published" in text
    assert "| xresnet1d50 | SimCLR | 0.881 | — | 0.883 ± 0.003 | 0.927 ± 0.003 |" in text
    # No random-init linear evaluation here: the baseline cell says so and the text gives the command.
    assert "| xresnet1d50 | none (supervised / random init) | not run | 0.920 | 0.721 ± 0.016 | 0.924 ± 0.005 |" \
        in text
    assert "ecg-ray evaluate --config jobs/paper/eval-linear.yaml --store /data/stores/ptbxl --output DIR" in text
    assert "0.881 [0.870, 0.892]" in text  # evaluation summary with its CI
    assert "| NORM |" in text  # per-label table
    # Pretraining: the newest checkpoint (6 epochs) is the one reported.
    assert "| simclr-20260101-000000 | SimCLR | xresnet1d50 | 6 | 3.5000 | 0.800 (val_macro_auc) |" in text
    for name in ("label_efficiency.png", "robustness.png", "pretraining_simclr-20260101-000000.png"):
        assert f"({name})" in text  # linked from the Markdown
        check_png(out.parent / name)
    assert "Skipped" not in text


def test_selection_on_validation_and_repeats(tmp_path):
    """Two learning rates and two seeds per cell: pick the lr by validation, average its seeds."""
    rows = []
    for lr, val, test in [(1e-3, 0.80, 0.70), (1e-2, 0.90, 0.60)]:
        for seed in (0, 1):
            rows.append({"variant": "a", "data.label_fraction": 1.0, "optim.lr": lr, "seed": seed,
                         "val_macro_auc": val, "test_macro_auc": test + 0.01 * seed})
    rows.append({"variant": "a", "data.label_fraction": 1.0, "optim.lr": 1e-3, "seed": 2,
                 "val_macro_auc": 0.99, "test_macro_auc": 0.99, "status": "ERROR"})
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    text = write_report(tmp_path, tmp_path / "out" / "r.md").read_text()
    assert "0.605 ± 0.007 (n=2)" in text  # lr=0.01 (best validation) although its test AUC is lower
    assert "optim.lr=0.01" in text
    assert "ERROR 1" in text
    assert not (tmp_path / "out" / "label_efficiency.png").exists()  # one fraction: no curve


def test_minimal_csv_tables(tmp_path):
    """No variant column, CSV "inf" for the clean row, no label fraction: still tabulated and plotted."""
    pd.DataFrame({"method.name": ["byol", "byol"], "eval.mode": ["linear", "linear"], "trial_id": ["a", "b"],
                  "test_macro_auc": [0.87, 0.89]}).to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "noise").mkdir()
    (tmp_path / "noise" / "robustness.csv").write_text(
        "variant,noise_type,snr_db,test_macro_auc,trial_id\nx,none,inf,0.9,a\nx,em,0,0.6,a\nx,em,6,0.7,a\n")
    text = write_report(tmp_path).read_text()
    assert "| byol linear | 0.880 ± 0.014 (n=2) |" in text
    assert "| x | em | 0.900 | 0.600 | 0.700 |" in text
    check_png(tmp_path / "report" / "robustness.png")


def test_without_matplotlib_tables_are_still_written(artefacts, monkeypatch):
    from ecg_ray.report import plots

    monkeypatch.setattr(plots, "new_figure", lambda width, height: None)
    out = write_report(artefacts)
    text = out.read_text()
    assert "matplotlib is not installed" in text
    assert "| variant | 1% labels | 10% labels | 100% labels |" in text
    assert list(out.parent.glob("*.png")) == []


def test_empty_directory(tmp_path):
    out = write_report(tmp_path)
    text = out.read_text()
    assert "Nothing known was found" in text
    assert list(out.parent.glob("*.png")) == []


def test_corrupt_files_are_skipped(artefacts):
    bad = artefacts / "eval" / "broken"
    bad.mkdir()
    (bad / "evaluation.json").write_text("{not json")
    (artefacts / "sweeps" / "bad").mkdir()
    (artefacts / "sweeps" / "bad" / "results.csv").write_text("a,b\n1,2\n")
    run = artefacts / "runs" / "simclr-20260101-000000"
    (run / "checkpoint_2026-01-01_00-00-03.000000").mkdir()
    (run / "checkpoint_2026-01-01_00-00-03.000000" / "history.json").write_text("[1, 2")
    text = write_report(artefacts).read_text()
    assert "## Skipped" in text
    assert "`eval/broken/evaluation.json` | JSONDecodeError" in text
    assert "`sweeps/bad/results.csv` | ValueError: no test_macro_auc column" in text
    assert "checkpoint_2026-01-01_00-00-03.000000/history.json` | JSONDecodeError" in text
    # The good artefacts are still all there.
    assert "2 evaluation summaries, 1 pretraining run; 3 files skipped" in text
    assert "| simclr-20260101-000000 | SimCLR | xresnet1d50 | 6 |" in text


def test_published_reference_covers_the_paper_rows():
    assert PUBLISHED[("xresnet1d50", "simclr")]["finetune"][0] == 0.927
    assert PUBLISHED[("cpc_4fc2lstm", "cpc")]["linear"][0] == 0.927
    assert len(PUBLISHED) == 5


def test_artefact_names_are_the_writers():
    """Writers and the report take the run file names from one torch-free module (ecg_ray.run_layout)."""
    from ecg_ray import report, run_layout
    from ecg_ray.evaluation import predictions
    from ecg_ray.train import checkpoint, trainer

    assert report.HISTORY_FILE is checkpoint.HISTORY_FILE is run_layout.HISTORY_FILE
    assert report.RUN_CONFIG is trainer.RUN_CONFIG is run_layout.RUN_CONFIG
    assert report.RAY_SNAPSHOT is checkpoint.RAY_SNAPSHOT is run_layout.RAY_SNAPSHOT
    assert report.EVALUATION_FILE is predictions.EVALUATION_FILE is run_layout.EVALUATION_FILE


def test_report_on_a_cloud_uri_says_to_copy_it_down(capsys):
    from ecg_ray.cli import main

    assert main(["report", "s3://bucket/sweeps/lf"]) == 2
    assert "report reads a local directory; copy it down first, e.g. aws s3 sync s3://bucket/sweeps/lf ./lf" \
        in capsys.readouterr().err
