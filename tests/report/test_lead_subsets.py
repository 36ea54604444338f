"""The report's lead-subset table: written when an evaluation used data.leads, a model's 12-lead rows
first; lead-subset and whole-record evaluations stay out of the paper comparison."""

from __future__ import annotations

import json
from pathlib import Path

from ecg_ray.report import write_report

PTBXL = "/data/stores/ptbxl"
PAPER_HEADING = "## Paper comparison (PTB-XL, test macro AUC)"


def write_evaluation(run_dir: Path, *, test: float, leads: list[str] | None = None, encoder: str = "xresnet1d50",
                     method: str = "simclr", window: int | None = 250, variant: str | None = None) -> None:
    """An evaluation.json as ``ecg-ray evaluate`` writes it (``leads`` None: a file from before the key)."""
    run_dir.mkdir(parents=True)
    summary = {"mode": "linear", "variant": variant or f"pretrained linear {run_dir.name}", "method": method,
               "encoder": encoder, "label_set": "all", "label_fraction": 1.0, "val_macro_auc": test,
               "test_macro_auc": test, "test_macro_auc_ci": [test - 0.02, test + 0.02], "labels_scored": 71,
               "best_epoch": 1, "store": PTBXL, "test_datasets": {"ptbxl": 2198}, "train_folds": list(range(1, 9)),
               "val_folds": [9], "test_folds": [10], "n_labels": 71, "min_test_positives": 1,
               "labels_excluded": [], "seed": 0, "pretrained": "runs/simclr", "window": window}
    if leads is not None:
        summary["leads"] = leads
    (run_dir / "evaluation.json").write_text(json.dumps(summary))


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


ALL_12 = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def test_lead_subset_table(tmp_path):
    write_evaluation(tmp_path / "full", test=0.90, leads=ALL_12)
    write_evaluation(tmp_path / "one", test=0.80, leads=["I"])
    write_evaluation(tmp_path / "three", test=0.86, leads=["I", "II", "V1"])
    write_evaluation(tmp_path / "older", test=0.89)  # no leads key: all 12
    write_evaluation(tmp_path / "other-model", test=0.70, encoder="cpc_4fc2lstm", method="cpc", leads=ALL_12)
    text = write_report(tmp_path).read_text()
    table = section(text, "## Lead subsets")
    rows = table_rows(table)
    assert [r[4] for r in rows] == ["all 12", "all 12", "I,II,V1 (3)", "I (1)"]
    assert [r[5] for r in rows] == ["0.900 [0.880, 0.920]", "0.890 [0.870, 0.910]", "0.860 [0.840, 0.880]",
                                    "0.800 [0.780, 0.820]"]
    assert [r[6] for r in rows] == ["`full`", "`older`", "`three`", "`one`"]
    assert all(r[1] == "xresnet1d50" and r[3] == "linear" for r in rows)
    assert "cpc_4fc2lstm" not in table  # a model without a subset evaluation has no rows here
    # the paper comparison averages only full-lead, sliding-window evaluations
    paper = section(text, PAPER_HEADING)
    assert "0.895" in paper and "0.850" not in paper  # mean of 0.90 and 0.89, not of all four
    assert "leads I,II,V1 only (the others zeroed), not all 12" in text
    # each lead set has its own results table: I and I,II,V1 are never averaged into one cell
    assert "0.830" not in text
    assert "0.860" in section(text, "## Results on `/data/stores/ptbxl` (label set `all`, 71 labels; leads I,II,V1)")
    assert "0.800" in section(text, "## Results on `/data/stores/ptbxl` (label set `all`, 71 labels; leads I)")


def test_whole_record_evaluations_are_off_the_paper_protocol(tmp_path):
    write_evaluation(tmp_path / "windows", test=0.90)
    write_evaluation(tmp_path / "whole", test=0.80, window=0)
    text = write_report(tmp_path).read_text()
    assert "0.900" in section(text, PAPER_HEADING) and "0.850" not in section(text, PAPER_HEADING)
    assert "whole records scored, not sliding windows" in text
    assert "## Lead subsets" not in text  # no subset: no table
