"""`semvlp pretrain --token-budget`: micro-batches by tokens, and a resumed run reproduces the losses exactly."""

import shutil

import pytest

from semvlp.data.synthetic import write_synthetic
from semvlp.train.checkpoint import LATEST

from pretrain_runs import deepspeed_config, losses, pretrain_args, run, tiny_config
from tolerances import FP32_ATOL

STEPS, EVERY = 6, 3


def test_token_budget_run_resumes_exactly(tmp_path):
    write_synthetic(tmp_path / "data", {"train": 30, "val": 4, "novel": 4}, seed=3, formats=("h5",))
    full = tmp_path / "full"
    args = pretrain_args(tmp_path / "data", tiny_config(tmp_path), deepspeed_config(tmp_path, "zero0_fp32"), full,
                         STEPS, 2, "--checkpoint-every", str(EVERY), "--token-budget", "200")
    run("plain", 1, args)
    expected = losses(full)
    assert [r["step"] for r in expected] == list(range(1, STEPS + 1))

    # The same run, continued from its checkpoint at step EVERY.
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    (resumed / "checkpoints" / LATEST).write_text(f"step_{EVERY:08d}")
    run("plain", 1, [str(resumed) if a == str(full) else a for a in args] + ["--resume"])
    again = losses(resumed)
    assert [r["step"] for r in again] == list(range(1, STEPS + 1))
    for a, b in zip(again, expected):
        assert (a["mode"], a["loss"], a["losses"]) == (b["mode"], b["loss"], b["losses"]), a["step"]


@pytest.mark.slow
def test_compiled_run_gives_the_eager_losses(tmp_path):
    write_synthetic(tmp_path / "data", {"train": 30, "val": 4, "novel": 4}, seed=3, formats=("h5",))
    outputs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        outputs[name] = tmp_path / name
        args = pretrain_args(tmp_path / "data", tiny_config(tmp_path), deepspeed_config(tmp_path, "zero0_fp32"),
                             outputs[name], 4, 1, "--token-budget", "200", *extra)
        run("plain", 1, args, timeout=600)
    eager, compiled = losses(outputs["eager"]), losses(outputs["compiled"])
    assert [r["mode"] for r in compiled] == ["single", "two"] * 2
    for a, b in zip(compiled, eager):
        assert abs(a["loss"] - b["loss"]) <= FP32_ATOL * max(1.0, abs(b["loss"])), a["step"]
