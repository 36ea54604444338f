"""Which evaluations the report sets beside the paper's numbers, on which scale, with which baselines
and significance marks; and the label-efficiency curves of fold-based (paper) and stratified sweeps."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ecg_ray.report import write_report
from ecg_ray.report.formatting import parse_folds
from ecg_ray.report.significance import Significance

JOBS = Path(__file__).resolve().parents[1] / "jobs"
PAPER_HEADING = "## Paper comparison (PTB-XL, test macro AUC)"
PTBXL = "/data/stores/ptbxl"


def write_evaluation(run_dir: Path, mode: str, method: str | None = None, *, test: float = 0.9,
                     reference: float | None = None, encoder: str = "xresnet1d50", store: str = PTBXL,
                     datasets: dict | None = None, train_folds: list[int] | None = None, label_set: str = "all",
                     n_labels: int = 71, seed: int = 0, label_fraction: float = 1.0, old: bool = False) -> Path:
    """An evaluation.json as ``ecg-ray evaluate`` writes it; ``old`` leaves out the fields added later."""
    run_dir.mkdir(parents=True)
    summary = {"mode": mode, "variant": f"{method} {mode}" if method else mode, "method": method,
               "encoder": encoder, "label_set": label_set, "label_fraction": label_fraction,
               "val_macro_auc": test - 0.01, "test_macro_auc": test, "test_macro_auc_ci": [test - 0.01, test + 0.01],
               "labels_scored": n_labels, "best_epoch": 3}
    if not old:
        summary.update({"store": store, "test_datasets": datasets or {"ptbxl": 2198},
                        "train_folds": train_folds or list(range(1, 9)), "val_folds": [9], "test_folds": [10],
                        "n_labels": n_labels, "min_test_positives": 1, "labels_excluded": [], "seed": seed,
                        "predictions": "test_predictions.npz"})
        if reference is not None:
            summary["test_macro_auc_reference"] = reference
    path = run_dir / "evaluation.json"
    path.write_text(json.dumps(summary))
    return path


def section(text: str, heading: str) -> str:
    """The text from ``heading`` to the next second-level heading."""
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def row(text: str, *cells: str) -> str:
    """The Markdown table line that starts with ``cells``; fails if there is none."""
    prefix = "| " + " | ".join(cells) + " |"
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, text)
    return lines[0]


def test_demo_probe_is_not_set_beside_the_paper(tmp_path):
    """make demo: a 6-label synthetic linear probe gets a table of its own, without published numbers."""
    store = str(tmp_path / "synthetic.zarr")
    for name, method, auc in (("simclr", "simclr", 0.829), ("random", None, 0.612)):
        write_evaluation(tmp_path / "evaluations" / name, "linear", method, test=auc, reference=auc, store=store,
                         datasets={"synthetic": 200}, n_labels=6)
    text = write_report(tmp_path).read_text()
    paper = section(text, PAPER_HEADING)
    assert "No evaluation here follows the paper's protocol" in paper
    assert "0.829" not in paper and "0.883" not in text  # neither ours nor the published SimCLR number there
    own = section(text, "## Results on `synthetic.zarr` (label set `all`, 6 labels)")
    assert "tested on synthetic, not PTB-XL alone" in own
    assert row(own, "xresnet1d50", "SimCLR", "0.829", "—") == "| xresnet1d50 | SimCLR | 0.829 | — |"
    assert row(own, "xresnet1d50", "none (supervised / random init)", "0.612")
    assert "| model | pretraining | linear (ours) | fine-tune (ours) |\n" in own  # no published columns


def test_paper_protocol_runs_use_the_reference_scale(tmp_path):
    write_evaluation(tmp_path / "a", "linear", "simclr", test=0.900, reference=0.880, n_labels=65)
    write_evaluation(tmp_path / "b", "linear", None, test=0.730, reference=0.712, n_labels=65)
    write_evaluation(tmp_path / "c", "linear", "byol", test=0.870, n_labels=65)  # no reference AUC: fallback
    write_evaluation(tmp_path / "d", "linear", "simclr", test=0.800, reference=0.790, n_labels=65,
                     train_folds=[1, 2])  # the paper's label-fraction protocol: a row of its own
    write_evaluation(tmp_path / "e", "linear", "simclr", test=0.950, reference=0.950, n_labels=5,
                     label_set="superdiagnostic")  # PTB-XL, but not the paper's label set
    text = write_report(tmp_path).read_text()
    paper = section(text, PAPER_HEADING)
    assert "65 of the paper's 71 statements" in paper
    assert "compared on the reference scale" in paper
    assert row(paper, "xresnet1d50", "SimCLR", "0.880", "—", "0.883 ± 0.003")
    assert row(paper, "xresnet1d50", "none (supervised / random init)", "0.712", "—", "0.721 ± 0.016")
    assert row(paper, "xresnet1d50", "BYOL", "0.870†", "—", "0.878 ± 0.002")
    assert "†: no reference-scale AUC" in paper
    assert row(paper, "xresnet1d50", "SimCLR; trained on folds 1..2 (2/8 of the training folds)", "0.790", "—",
               "—", "—")
    assert "0.950" not in paper
    assert "0.950" in section(text, "## Results on `/data/stores/ptbxl` (label set `superdiagnostic`, 5 labels)")
    # The summaries list both scales.
    summaries = section(text, "## Evaluation summaries")
    assert "test AUC [CI] (ours) | test AUC (reference scale)" in summaries
    line = next(line for line in summaries.splitlines() if "`a`" in line)
    assert "0.900 [0.890, 0.910] | 0.880 | 65/65" in line


def test_old_summaries_go_to_store_unknown(tmp_path):
    write_evaluation(tmp_path / "old", "linear", "simclr", test=0.881, old=True)
    write_evaluation(tmp_path / "new", "supervised", test=0.920, reference=0.921)
    text = write_report(tmp_path).read_text()
    paper = section(text, PAPER_HEADING)
    assert "0.881" not in paper and row(paper, "xresnet1d50", "none (supervised / random init)", "not run", "0.921")
    unknown = section(text, "## Results, store unknown (label set `all`)")
    assert row(unknown, "xresnet1d50", "SimCLR", "0.881", "—")
    assert "store unknown" not in paper


def test_random_init_linear_baseline_is_always_carried(tmp_path):
    write_evaluation(tmp_path / "sup", "supervised", test=0.92, reference=0.92)
    text = write_report(tmp_path).read_text()
    paper = section(text, PAPER_HEADING)
    assert row(paper, "xresnet1d50", "none (supervised / random init)", "not run", "0.920")
    assert row(paper, "cpc_4fc2lstm (4FC+2LSTM+2FC)", "none (supervised / random init)", "not run", "—")
    assert f"`ecg-ray evaluate --config jobs/paper/eval-linear.yaml --store {PTBXL} --output DIR`" in paper
    assert f"`ecg-ray evaluate --config jobs/paper/cpc-linear.yaml --store {PTBXL} --output DIR`" in paper

    write_evaluation(tmp_path / "lin", "linear", test=0.72, reference=0.71)
    paper = section(write_report(tmp_path).read_text(), PAPER_HEADING)
    assert row(paper, "xresnet1d50", "none (supervised / random init)", "0.710", "0.920")
    assert "eval-linear.yaml" not in paper and "cpc-linear.yaml" in paper  # only the CPC baseline is missing


# ----------------------------------------------------------------------------------------- label efficiency


def _sweep_table(tmp_path: Path, name: str, search: dict[str, list], score) -> Path:
    """results.parquet as ecg_ray.tune.write_tables writes it (lists become JSON text) for a grid sweep."""
    from ecg_ray.tune import load_sweep, write_tables

    spec = load_sweep(JOBS / "sweeps" / "label-folds.yaml")
    spec["search"] = {key: {"grid": values} for key, values in search.items()}
    results = []
    for v in range(len(spec["variants"])):
        for values in zip(*search.values(), strict=True):
            params = {"__variant": v, **dict(zip(search, values, strict=True))}
            auc = score(v, params)
            tid = f"t{len(results)}"
            results.append(SimpleNamespace(config=params, path=str(tmp_path / tid), error=None, metrics={
                "trial_id": tid, "val_macro_auc": auc - 0.01, "test_macro_auc": auc, "labels_scored": 71}))
    write_tables(spec, results, tmp_path / name)
    return tmp_path / name / "results.parquet"


def _capture_figures(monkeypatch) -> list:
    from ecg_ray.report import plots

    figures, real = [], plots.new_figure
    monkeypatch.setattr(plots, "new_figure", lambda w, h: figures.append(real(w, h)) or figures[-1])
    return figures


def test_label_folds_sweep_gives_the_folds_curve(tmp_path, monkeypatch):
    folds = [[1], [1, 2], [1, 2, 3, 4], list(range(1, 9))]
    table = _sweep_table(tmp_path, "folds", {"data.train_folds": folds},
                         lambda v, p: 0.70 + 0.02 * len(p["data.train_folds"]) + 0.01 * v)
    assert pd.read_parquet(table)["data.train_folds"].iloc[1] == "[1, 2]"  # the writer's form, read back below
    figures = _capture_figures(monkeypatch)
    text = write_report(tmp_path).read_text()
    assert "| variant | fold 1 (12.5%) | folds 1..2 (25%) | folds 1..4 (50%) | 100% labels |" in text
    assert row(text, "pretrained linear", "0.720", "0.740", "0.780", "0.860")
    assert "`data.train_folds`" not in text.split("#### Label efficiency")[0]  # not taken for a hyperparameter
    assert "*folds 1..k* (solid)" in text and "*stratified*" not in text
    assert "(label_efficiency.png)" in text
    (ax,) = [f for f in figures if f.axes and f.axes[0].get_title() == "Label efficiency"][0].axes
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # errorbar: (data line, caps, bars)
    assert set(lines) == {"pretrained linear", "pretrained finetune", "supervised"}
    assert list(lines["supervised"].get_xdata()) == [12.5, 25.0, 50.0, 100.0]


def test_folds_and_stratified_curves_side_by_side(tmp_path, monkeypatch):
    _sweep_table(tmp_path, "folds", {"data.train_folds": [[1], [1, 2, 3, 4], list(range(1, 9))]},
                 lambda v, p: 0.70 + 0.02 * len(p["data.train_folds"]))
    _sweep_table(tmp_path, "both", {"data.train_folds": [list(range(1, 9))] * 3, "data.label_fraction": [0.1, 0.5, 1.0]},
                 lambda v, p: 0.75 + 0.1 * p["data.label_fraction"])
    figures = _capture_figures(monkeypatch)
    # One table varying both keys: the folds sweep and the stratified sweep merged into one file.
    merged = pd.concat([pd.read_parquet(tmp_path / "folds" / "results.parquet"),
                        pd.read_parquet(tmp_path / "both" / "results.parquet")], ignore_index=True)
    merged = merged.drop_duplicates(subset=["variant", "data.train_folds", "data.label_fraction"])
    out = tmp_path / "merged"
    out.mkdir()
    merged.to_csv(out / "results.csv", index=False)
    for name in ("folds", "both"):
        for file in (tmp_path / name).iterdir():
            file.unlink()
    text = write_report(out).read_text()
    assert "| variant | 10% stratified | fold 1 (12.5%) | folds 1..4 (50%) | 50% stratified | 100% labels |" in text
    assert "*folds 1..k* (solid)" in text and "*stratified* (dashed)" in text
    ax = [f for f in figures if f.axes and f.axes[0].get_title() == "Label efficiency"][0].axes[0]
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # errorbar: (data line, caps, bars)
    assert list(lines["supervised (folds 1..k)"].get_xdata()) == [12.5, 50.0, 100.0]
    assert list(lines["supervised (stratified)"].get_xdata()) == [10.0, 50.0, 100.0]
    assert lines["supervised (stratified)"].get_linestyle() == "--"


def test_label_folds_job_grids_whole_fold_lists():
    from ray.tune.search.variant_generator import generate_variants

    from ecg_ray.config import load_config
    from ecg_ray.tune import load_sweep, param_space, trial_overrides

    spec = load_sweep(JOBS / "sweeps" / "label-folds.yaml")
    trials = [config for _, config in generate_variants(param_space(spec))]
    assert len(trials) == 8 * 3
    assert sorted({tuple(t["data.train_folds"]) for t in trials}) == [tuple(range(1, k + 1)) for k in range(1, 9)]
    overrides, _ = trial_overrides(spec, trials[-1])
    config = load_config(spec["base"], overrides)
    assert (config.data.train_folds, config.data.val_folds, config.data.test_folds) == (list(range(1, 9)), [9], [10])


def test_fold_lists_read_back_from_every_table_form():
    assert parse_folds("[1, 2]") == parse_folds([2, 1]) == parse_folds(np.array([1, 2])) == (1, 2)
    assert parse_folds("[1 2 3]") == (1, 2, 3)  # numpy's str() of an array
    assert parse_folds(float("nan")) is None and parse_folds("") is None and parse_folds(None) is None


# ----------------------------------------------------------------------------------------- significance


def _predictions(run_dir: Path, probs: np.ndarray, labels: np.ndarray) -> None:
    from ecg_ray.evaluation.predictions import Predictions, save_predictions

    ids = np.array([f"rec{i:04d}" for i in range(len(labels))])
    save_predictions(run_dir / "test_predictions.npz", Predictions(
        record_ids=ids, probs=probs, labels=labels, label_names=[f"L{j}" for j in range(labels.shape[1])],
        label_set="all"))


def test_significance_marks_against_the_baselines(tmp_path):
    pytest.importorskip("ecg_ray.evaluation.compare", reason="needs ecg_ray.evaluation.compare")
    rng = np.random.default_rng(0)
    labels = (rng.random((300, 4)) < 0.3).astype(np.uint8)
    good = np.clip(labels * 0.6 + rng.random(labels.shape) * 0.5, 0, 1).astype(np.float32)
    noise = rng.random(labels.shape).astype(np.float32)
    slightly = np.clip(good + rng.normal(0, 0.01, labels.shape), 0, 1).astype(np.float32)
    runs = {  # name: (mode, method, seed, probs)
        "random-linear": ("linear", None, 0, noise),
        "simclr-linear-0": ("linear", "simclr", 0, good),
        "simclr-linear-1": ("linear", "simclr", 1, noise),  # a second seed: only the first (seed 0) is compared
        "supervised": ("supervised", None, 0, good),
        "simclr-finetune": ("finetune", "simclr", 0, slightly),
        "byol-linear": ("linear", "byol", 0, good),  # no predictions file saved
    }
    for name, (mode, method, seed, probs) in runs.items():
        write_evaluation(tmp_path / name, mode, method, test=0.8, reference=0.8, n_labels=4, seed=seed)
        if name != "byol-linear":
            _predictions(tmp_path / name, probs, labels)
    text = write_report(tmp_path).read_text()
    paper = section(text, PAPER_HEADING)
    assert row(paper, "xresnet1d50", "SimCLR", "0.800 ± 0.000 (n=2)*", "0.800", "0.883 ± 0.003")
    notes = paper.splitlines()
    linear = next(line for line in notes if line.startswith("- xresnet1d50 SimCLR, linear"))
    assert "vs the random-init linear evaluation (first run of each side: lowest seed)" in linear
    assert "p = 0.002" in linear and "300 test records, 4 labels, reference scale" in linear
    assert linear.endswith("(*)") and "lowest seed): +0." in linear  # difference = pretrained - baseline
    finetune = next(line for line in notes if line.startswith("- xresnet1d50 SimCLR, fine-tune"))
    assert "vs supervised training" in finetune and not finetune.endswith("(*)")
    byol = next(line for line in notes if line.startswith("- xresnet1d50 BYOL, linear"))
    assert "significance not computed" in byol and "test_predictions.npz" in byol
    assert row(paper, "xresnet1d50", "BYOL", "0.800", "—")  # no mark without a comparison


def test_without_the_compare_module_the_report_says_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ecg_ray.evaluation.compare", None)  # import now raises ImportError
    write_evaluation(tmp_path / "base", "linear", test=0.7, reference=0.7)
    write_evaluation(tmp_path / "simclr", "linear", "simclr", test=0.88, reference=0.88)
    paper = section(write_report(tmp_path).read_text(), PAPER_HEADING)
    assert "Significance not computed: ecg_ray.evaluation.compare is not available" in paper
    assert row(paper, "xresnet1d50", "SimCLR", "0.880", "—")


def test_comparisons_are_capped_and_cached(monkeypatch):
    calls = []

    class ComparisonError(Exception):
        pass

    def compare_evaluations(a, b, **kwargs):
        calls.append((a, b, kwargs))
        return {"difference": 0.1, "p_value": 0.01, "significant": True}

    monkeypatch.setitem(sys.modules, "ecg_ray.evaluation.compare", SimpleNamespace(
        ComparisonError=ComparisonError, compare_evaluations=compare_evaluations))
    significance = Significance(limit=2)
    assert significance.compare(Path("a"), Path("b"))[0]["difference"] == 0.1
    assert significance.compare(Path("a"), Path("b"))[0] is not None  # cached: not run again
    assert significance.compare(Path("a"), Path("c"))[0] is not None
    result, why = significance.compare(Path("a"), Path("d"))
    assert result is None and "at most 2 comparisons" in why
    assert [c[:2] for c in calls] == [(Path("a"), Path("b")), (Path("a"), Path("c"))]
    assert calls[0][2] == {"n_boot": 1000, "seed": 0, "min_test_positives": 1}


def test_report_with_comparisons_stays_free_of_torch(tmp_path):
    """The report (significance included) must run where only the result files are: no torch, no Ray."""
    import subprocess

    pytest.importorskip("ecg_ray.evaluation.predictions", reason="needs ecg_ray.evaluation.predictions")
    labels = (np.arange(40)[:, None] % np.array([2, 3]) == 0).astype(np.uint8)
    for name, method in (("base", None), ("simclr", "simclr")):
        write_evaluation(tmp_path / name, "linear", method, test=0.8, reference=0.8, n_labels=2)
        _predictions(tmp_path / name, labels.astype(np.float32) * (0.9 if method else 0.1), labels)
    code = ("import sys; from ecg_ray.report import write_report; text = write_report(sys.argv[1]).read_text(); "
            "assert 'test records' in text, text; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_method_outside_the_paper_is_named_as_its_evaluation_says(tmp_path):
    """Display names come from the evaluation files (written from the method registry), not from a list here."""
    path = write_evaluation(tmp_path / "cmsc", "linear", "cmsc", test=0.8, reference=0.8)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "method_display": "CMSC (CLOCS)"}))
    write_evaluation(tmp_path / "simclr", "linear", "simclr", test=0.85, reference=0.85)
    table = section(write_report(tmp_path).read_text(), "## Paper comparison")
    assert "| xresnet1d50 | CMSC (CLOCS) | 0.800 |" in table and "| cmsc |" not in table
    assert "| xresnet1d50 | SimCLR | 0.850 |" in table  # written before method_display: the paper's names
    # The paper's methods keep the paper's order; others follow.
    assert table.index("| SimCLR |") < table.index("| BYOL |") < table.index("| CMSC (CLOCS) |")
