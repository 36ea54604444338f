"""bench/quality_sample.py (issue #14 "Evidence"): its commands, its statistics and a smoke run end to end.

The smoke run checks that every row of every encoder runs through the ``ecg-ray`` CLI and reports
AUCs in [0, 1]; the figures themselves need the full budget (see the script's docstring).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _quality_module():
    spec = importlib.util.spec_from_file_location("bench_quality_sample", BENCH / "quality_sample.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _flags(command: list[str]) -> dict:
    """The ``--set KEY=VALUE`` pairs of a command (a later one wins, as in the CLI)."""
    pairs = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_every_row_of_one_seed_shares_the_budget_and_cpc_keeps_its_head_only_share(tmp_path):
    quality = _quality_module()
    args = quality.parse_args(["--eval-epochs", "21", "--epochs", "7", "--out", str(tmp_path)])
    assert args.seed_list == [0, 1, 2] and args.encoder_list == ["xresnet1d50", "cpc_4fc2lstm", "cpc_s4"]
    for encoder, plan in quality.PLANS.items():
        for row in quality.ROWS:
            command = quality.eval_args(args, plan, encoder, row, 2, "STORE")
            flags = _flags(command)
            assert command[:2] == ["evaluate", "--config"] and "--encoder" not in command
            assert flags["seed"] == "2" and flags["train.epochs"] == "21" and flags["model.encoder"] == encoder
            assert flags["train.max_steps_per_epoch"] == "null" and flags["train.gpus_per_worker"] == "0.0"
            # each row writes its own run directory (parallel chains never share a timestamped name)
            assert command[command.index("--output") + 1] == str(tmp_path / "runs" / encoder / "seed2" / row)
    # CPC fine-tuning trains the head alone for 50 of the paper's 70 epochs: 15 of 21 here; xresnet has no such phase
    cpc = _flags(quality.eval_args(args, quality.PLANS["cpc_s4"], "cpc_s4", "finetune", 0, "S"))
    assert cpc["eval.head_only_epochs"] == "15"
    assert "eval.head_only_epochs" not in _flags(quality.eval_args(args, quality.PLANS["xresnet1d50"],
                                                                   "xresnet1d50", "finetune", 0, "S"))
    one_epoch = quality.parse_args(["--eval-epochs", "1", "--out", str(tmp_path)])
    assert _flags(quality.eval_args(one_epoch, quality.PLANS["cpc_s4"], "cpc_s4", "finetune", 0, "S"))[
        "eval.head_only_epochs"] == "0"  # at least one all-layers epoch is left
    smoke = quality.parse_args(["--smoke", "--out", str(tmp_path)])
    assert (smoke.seed_list, smoke.epochs, smoke.eval_epochs, smoke.max_steps) == ([0], 1, 1, 1)
    with pytest.raises(SystemExit):
        quality.parse_args(["--encoders", "xresnet1d50,resnet9000", "--out", str(tmp_path)])


def test_summary_gives_mean_sample_std_per_seed_values_and_the_supervised_gap():
    quality = _quality_module()

    def evaluation(auc, reference):
        return {"test_macro_auc": auc, "test_macro_auc_reference": reference}

    runs = [{"encoder": "cpc_s4", "seed": seed, "errors": {} if seed < 2 else {"linear": "boom"},
             "rows": {"supervised": evaluation(0.80 + 0.02 * seed, 0.70), "random_linear": evaluation(0.55, 0.52),
                      "finetune": evaluation(0.7, float("nan")),
                      **({"linear": evaluation(0.6, 0.6)} if seed < 2 else {})}} for seed in range(3)]
    table = quality.summarise(runs, ["cpc_s4"])["cpc_s4"]
    supervised = table["rows"]["supervised"]["auc"]
    assert supervised["values"] == pytest.approx([0.80, 0.82, 0.84]) and math.isclose(supervised["mean"], 0.82)
    assert math.isclose(supervised["std"], 0.02)  # sample standard deviation (n - 1)
    assert math.isclose(table["supervised_minus_random_linear"]["auc"], 0.27)
    assert math.isclose(table["supervised_minus_random_linear"]["reference"], 0.18)
    assert table["rows"]["linear"]["seeds"] == [0, 1] and table["rows"]["linear"]["errors"] == {2: "boom"}
    assert table["rows"]["finetune"]["reference"] == {"mean": None, "std": None, "values": []}  # NaN left out
    lines = quality.result_lines({"cpc_s4": table})
    assert "RESULT quality_sample_cpc_s4 supervised_minus_random_linear=0.2700 reference=0.1800" in lines
    assert ("RESULT quality_sample_cpc_s4_finetune test_macro_auc=0.7000 std=0.0000 reference=nan reference_std=nan "
            "seeds=3") in lines
    assert "RESULT quality_sample_cpc_s4_linear test_macro_auc=0.6000 std=0.0000 reference=0.6000" in " ".join(lines)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ECG_RAY_BENCH_TESTS"),
                    reason="18 CLI runs, ~10 min on 2 cores: a benchmark, not part of make test; "
                           "set ECG_RAY_BENCH_TESTS=1 to run it")
def test_smoke_runs_every_row_of_every_encoder_through_the_cli(ptbxl_dir, tmp_path):
    out = tmp_path / "quality"
    proc = subprocess.run([sys.executable, str(BENCH / "quality_sample.py"), "--smoke", "--sample", str(ptbxl_dir),
                           "--out", str(out)], capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "quality_sample.json").read_text())
    encoders = ("xresnet1d50", "cpc_4fc2lstm", "cpc_s4")
    assert sorted(r["encoder"] for r in figures["runs"]) == sorted(encoders)
    for run in figures["runs"]:
        assert run["errors"] == {} and set(run["rows"]) == {"pretrain", "linear", "finetune", "supervised",
                                                            "random_linear"}
        assert Path(run["rows"]["pretrain"]["encoder_file"]).is_file()
        for row in ("linear", "finetune", "supervised", "random_linear"):
            evaluation = json.loads((Path(run["rows"][row]["run_dir"]) / "evaluation.json").read_text())
            assert evaluation["encoder"] == run["encoder"] and evaluation["seed"] == 0
            # the pretrained rows read the exported encoder, the baselines start from random weights
            assert bool(evaluation["pretrained"]) == (row in ("linear", "finetune")), (run["encoder"], row)
    results = {name: dict(re.findall(r"(\w+)=(-?[0-9.]+)", values))
               for name, values in re.findall(r"^RESULT (\S+) (.*)$", proc.stdout, re.M)}
    for encoder in encoders:
        for row in ("linear", "finetune", "supervised", "random_linear"):
            stats = results[f"quality_sample_{encoder}_{row}"]
            assert 0 <= float(stats["test_macro_auc"]) <= 1 and 0 <= float(stats["reference"]) <= 1
            assert stats["seeds"] == "1"
        assert -1 <= float(results[f"quality_sample_{encoder}"]["supervised_minus_random_linear"]) <= 1
    table = (out / "quality_sample.md").read_text()
    assert table.count("| cpc_s4 | CPC |") == 2 and "| xresnet1d50 | SimCLR | fine-tune (pretrained) |" in table
