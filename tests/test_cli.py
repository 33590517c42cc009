from pathlib import Path

import pytest

from semvlp.cli import main

TINY = Path(__file__).resolve().parents[1] / "configs" / "model" / "tiny.json"


def test_demo_runs_forward_and_backward_in_both_modes(capsys):
    assert main(["demo", "--model-config", str(TINY), "--batch-size", "2", "--num-regions", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for mode in ("single", "two"):
        line = next(line for line in lines if line.startswith(f"{mode}-stream:"))
        for task in ("mlm", "mrm_feat", "mrm_label", "itm", "qa", "grounding", "grad-norm"):
            assert f"{task}=" in line


def test_missing_command_is_a_usage_error():
    with pytest.raises(SystemExit):
        main([])
