"""The command line checks its arguments up front, and a bad input ends it with one `semvlp: error:` line and a
non-zero exit status, never a traceback: in one process and on every rank under the deepspeed launcher."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from semvlp import cli
from semvlp.cli import main
from semvlp.train.options import PretrainOptions

from pretrain_runs import command, environment

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "model" / "tiny.json"


def _pretrain(out, *extra):
    return ["pretrain", "--model-config", str(TINY), "--deepspeed-config",
            str(REPO / "configs/deepspeed/zero2_fp32.json"), "--output", str(out), "--max-steps", "1",
            "--synthetic-scenes", "8", *extra]


@pytest.mark.parametrize("argv,argument,value,least", [
    (_pretrain("out"), "--max-steps", "0", 1),
    (_pretrain("out"), "--max-steps", "ten", 1),
    (_pretrain("out"), "--checkpoint-every", "0", 1),
    (_pretrain("out"), "--micro-batch-size", "-4", 1),
    (_pretrain("out"), "--gradient-accumulation-steps", "0", 1),
    (["data", "synth", "--out", "x"], "--train", "0", 1),
    (["data", "synth", "--out", "x"], "--val", "-3", 0),
    (["data", "vocab", "--corpus", "c.txt", "--out", "x"], "--vocab-size", "0", 1),
    (["finetune", "--task", "qa", "--data", "d", "--output", "o"], "--steps", "0", 1),
])
def test_counts_below_their_least_value_are_usage_errors(argv, argument, value, least, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, argument, value])
    assert exit_.value.code == 2
    assert f"error: argument {argument}: expected an integer of at least {least}, got {value!r}" in \
        capsys.readouterr().err


def test_options_built_in_python_check_the_same_counts():
    with pytest.raises(ValueError, match="max_steps: expected an integer of at least 1, got 0"):
        PretrainOptions("m.json", "d.json", "out", 0)
    with pytest.raises(ValueError, match="micro_batch_size: expected an integer of at least 1, got 0"):
        PretrainOptions("m.json", "d.json", "out", 5, micro_batch_size=0)
    assert PretrainOptions("m.json", "d.json", "out", 5).micro_batch_size is None  # None keeps the config file's


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("semvlp: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_value_error_of_semvlp_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--train", "2", "--formats", "parquet"]) == 2
    assert _one_error_line(capsys).startswith("semvlp: error: formats: expected some of")


def test_a_value_error_from_outside_semvlp_keeps_its_traceback(monkeypatch):
    def broken(args):
        return int("not a number")

    monkeypatch.setattr(cli, "_synth", broken)
    with pytest.raises(ValueError, match="invalid literal"):
        main(["data", "synth", "--out", "x"])


def test_pretrain_refuses_an_earlier_runs_folder_before_starting(tmp_path, capsys):
    (tmp_path / "checkpoints" / "step_00000009").mkdir(parents=True)
    (tmp_path / "checkpoints" / "latest").write_text("step_00000009\n")
    (tmp_path / "metrics.jsonl").write_text('{"step": 9, "loss": 1.0}\n')
    assert main(_pretrain(tmp_path)) == 2
    line = _one_error_line(capsys)
    assert f"output: {tmp_path} already holds a run (checkpoints, metrics.jsonl)" in line
    assert "--resume" in line and "--overwrite" in line
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 9, "loss": 1.0}\n'
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_00000009"]


def test_pretrain_refuses_an_output_it_cannot_write(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(_pretrain(tmp_path / "file" / "run")) == 2
    assert f"semvlp: error: output: cannot write to {tmp_path / 'file' / 'run'}" in _one_error_line(capsys)


def test_init_that_is_not_safetensors_is_a_clear_error(tmp_path, capsys):
    pickled = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(2)}, pickled)
    finetune = ["finetune", "--task", "qa", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "o")]
    assert main([*finetune, "--init", str(pickled)]) == 2
    assert f"init: {pickled} is not a safetensors file" in _one_error_line(capsys)

    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text(TINY.read_text())
    (export / "model.safetensors").write_bytes(pickled.read_bytes())
    assert main([*finetune, "--init", str(export)]) == 2
    assert f"init: the model.safetensors in {export} is not a readable safetensors file" in _one_error_line(capsys)

    # The model.safetensors file of an export is taken for its folder.
    save_file({"w": torch.zeros(2)}, str(export / "model.safetensors"))
    assert main(["eval", "--model", str(export / "model.safetensors"), "--data", str(tmp_path / "missing")]) == 2
    # Read as the export's weights, which hold no model here.
    assert "state_dict: expected the 'semvlp.*' keys" in _one_error_line(capsys)


def test_every_rank_under_deepspeed_exits_non_zero_with_the_error(tmp_path):
    """A bad model config, found after the process group is up: the ranks end with the error in one line (their
    own, or that of the rank that failed first) and no traceback, and the launcher exits non-zero (it kills the
    other ranks once one has exited, so not every rank's line need appear)."""
    config = json.loads(TINY.read_text())
    config["num_attention_heads"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(config))
    args = ["pretrain", "--model-config", str(tmp_path / "bad.json"), "--deepspeed-config",
            str(REPO / "configs/deepspeed/zero2_fp32.json"), "--output", str(tmp_path / "run"), "--max-steps", "2",
            "--synthetic-scenes", "8"]
    done = subprocess.run(command("deepspeed", 2, args), cwd=REPO, env=environment(), capture_output=True,
                          text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("semvlp: error: ")]
    assert errors, output[-3000:]
    assert all("hidden_size: 128 is not divisible by num_attention_heads (3)" in line for line in errors), errors
    assert "Traceback (most recent call last)" not in output, output[-3000:]
