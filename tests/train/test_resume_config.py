"""--resume refuses a model config (here a loss weight) other than the checkpoint's, naming the field, unless
--allow-config-change; then it continues with the new one."""

import json
import subprocess

import pytest

from pretrain_runs import REPO, command, deepspeed_config, environment, losses, pretrain_args, run, tiny_config


@pytest.mark.slow
def test_resume_with_another_loss_weight_is_refused_unless_allowed(tmp_path):
    config = tiny_config(tmp_path)
    changed = tmp_path / "itm_weight_2.json"
    changed.write_text(json.dumps({**json.loads(config.read_text()),
                                   "loss_weights": {**json.loads(config.read_text())["loss_weights"], "itm": 2.0}}))
    ds, out = deepspeed_config(tmp_path, "zero2_fp32"), tmp_path / "out"

    def args(model, steps, *extra):
        return pretrain_args("synthetic", model, ds, out, steps, 1, "--synthetic-scenes", "40",
                             "--checkpoint-every", "2", *extra)

    run("plain", 1, args(config, 2))
    refused = subprocess.run(command("plain", 1, args(changed, 3, "--resume")), cwd=REPO, env=environment(),
                             capture_output=True, text=True, timeout=240)
    assert refused.returncode != 0
    assert "semvlp: error: --resume: the model config" in refused.stderr, refused.stderr[-3000:]
    assert "in loss_weights.itm: 5.0 -> 2.0. Resume with that config, or pass --allow-config-change" in refused.stderr
    assert [r["step"] for r in losses(out)] == [1, 2]  # nothing trained

    run("plain", 1, args(changed, 3, "--resume", "--allow-config-change"))
    assert [r["step"] for r in losses(out)] == [1, 2, 3]
    saved = json.loads((out / "checkpoints" / "step_00000003" / "config.json").read_text())
    assert saved["loss_weights"]["itm"] == 2.0
