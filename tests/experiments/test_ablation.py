"""`semvlp ablation` end to end in a tiny setting, and the report's statistics."""

import json
import math
import subprocess
import sys

import pytest
from pretrain_runs import REPO, environment

from semvlp.cli import main
from semvlp.experiments.ablation import AblationSetup
from semvlp.experiments.report import markdown, mean_std, summarise

REQUIRED = ("schedule", "seed", "qa_acc", "qa_acc_fine", "qa_acc_high", "itm_acc", "t2i_R@1", "i2t_R@10",
            "itm_hard_binding")


@pytest.mark.slow
def test_ablation_command_end_to_end(tmp_path):
    reports = tmp_path / "reports"
    command = [sys.executable, "-m", "semvlp.cli", "ablation", "--output", str(tmp_path / "runs"),
               "--reports", str(reports), "--seeds", "3", "--pretrain-steps", "3", "--qa-steps", "3",
               "--nlvr2-steps", "2", "--micro-batch-size", "8", "--batch-size", "8", "--warmup-steps", "1",
               "--train-scenes", "40", "--held-out-scenes", "12", "--test-scenes", "12", "--retrieval-images", "10",
               "--vocab-size", "200"]
    done = subprocess.run(command, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((reports / "ablation.json").read_text())
    rows = report["rows"]
    assert [(r["schedule"], r["seed"]) for r in rows] == [("single", 3), ("two", 3), ("alternate", 3)]
    for r in rows:
        assert all(key in r for key in REQUIRED), sorted(r)
        assert all(0.0 <= r[key] <= 1.0 for key in REQUIRED[2:])
        assert 0.0 <= r["nlvr2_acc"] <= 1.0
        assert set(r["by_mode"]) == ({"single", "two"} if r["schedule"] == "alternate" else {r["schedule"]})
        assert r["mode"] in r["by_mode"]
    assert report["setup"]["pretrain_steps"] == 3
    table = (reports / "ablation.md").read_text()
    assert "| QA accuracy (test) |" in table and " ± " in table and "no-image reference" in table
    assert report["reference"]["itm_acc"] == 0.5 and 0.0 < report["reference"]["qa_acc"] < 1.0
    assert (reports / "ablation.png").stat().st_size > 10_000
    # Each schedule pretrained in the modes it names.
    log = (tmp_path / "runs" / "two_seed3" / "pretrain" / "metrics.jsonl").read_text().splitlines()
    assert {json.loads(line)["mode"] for line in log} == {"two"}
    log = (tmp_path / "runs" / "alternate_seed3" / "pretrain" / "metrics.jsonl").read_text().splitlines()
    assert {json.loads(line)["mode"] for line in log} == {"single", "two"}
    # `semvlp eval` on a pretraining export, in the ablation's fp32, repeats the row's matching and retrieval numbers.
    out = tmp_path / "itm.json"
    assert main(["eval", "--model", str(tmp_path / "runs" / "alternate_seed3" / "pretrain"), "--data",
                 str(tmp_path / "runs" / "data"), "--splits", "test", "--mode", "two", "--retrieval-images", "10",
                 "--precision", "fp32", "--out", str(out)]) == 0
    two = rows[2]["by_mode"]["two"]
    assert json.loads(out.read_text())["test"] == pytest.approx({**two["itm"], **two["retrieval"]})


def test_mean_std_and_summary():
    assert mean_std([0.5]) == (0.5, 0.0)
    mean, std = mean_std([0.2, 0.4, 0.9])
    assert mean == pytest.approx(0.5) and std == pytest.approx(math.sqrt((0.09 + 0.01 + 0.16) / 2))
    rows = [{"schedule": "two", "seed": s, "mode": "two", "qa_acc": v, "itm_acc": 0.5}
            for s, v in enumerate([0.2, 0.4])]
    rows.append({"schedule": "single", "seed": 0, "mode": "single", "qa_acc": 0.7, "itm_acc": 0.5})
    summary = summarise(rows)
    assert list(summary) == ["two", "single"]
    assert summary["two"]["qa_acc"]["mean"] == pytest.approx(0.3) and summary["two"]["qa_acc"]["n"] == 2
    table = markdown(rows, {})
    assert "| QA accuracy (test) | 30.0 ± 14.1 | **70.0 ± 0.0** |" in table
    assert "| ITM accuracy (test) | 50.0 ± 0.0 | 50.0 ± 0.0 |" in table  # a tie is not bold
    table = markdown(rows, {}, reference={"qa_acc": 0.25})
    assert "| QA accuracy (test) | 30.0 ± 14.1 | **70.0 ± 0.0** | 25.0 |" in table
    assert "| ITM accuracy (test) | 50.0 ± 0.0 | 50.0 ± 0.0 | - |" in table


def test_setup_checks_its_values():
    with pytest.raises(ValueError, match="schedules: expected some of"):
        AblationSetup(schedules=["both"])
    with pytest.raises(ValueError, match="pretrain_steps: expected a positive int, got 0"):
        AblationSetup(pretrain_steps=0)

