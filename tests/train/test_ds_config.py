import json
from pathlib import Path

import pytest
import torch

from semvlp.train.ds_config import load_deepspeed_config

CONFIGS = sorted(Path("configs/deepspeed").glob("*.json"))


def test_every_stage_and_precision_has_a_config():
    names = {p.stem for p in CONFIGS}
    assert names == {f"zero{stage}_{precision}" for stage in range(4) for precision in ("auto", "bf16", "fp16", "fp32")}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_configs_are_accepted_by_deepspeed(path):
    from deepspeed.runtime.config import DeepSpeedConfig

    stage, precision = path.stem[4], path.stem.split("_")[1]
    # An auto config is filled in from the hardware (tests/train/test_precision.py); here the flag picks bf16.
    run = load_deepspeed_config(path, max_steps=321, has_gpu=True, precision="bf16" if precision == "auto" else "auto")
    precision = "bf16" if precision == "auto" else precision
    parsed = DeepSpeedConfig(run.deepspeed)
    assert parsed.zero_optimization_stage == int(stage)
    assert parsed.bfloat16_config.enabled == (precision == "bf16")
    assert parsed.float16_config.enabled == (precision == "fp16")
    assert parsed.gradient_clipping > 0
    assert run.deepspeed["scheduler"]["params"]["total_num_steps"] == 321
    assert run.activation_checkpointing is False
    assert "enabled" not in run.deepspeed["activation_checkpointing"]


def test_overrides_and_the_activation_checkpointing_switch(tmp_path):
    config = json.loads(Path("configs/deepspeed/zero2_bf16.json").read_text())
    config["activation_checkpointing"]["enabled"] = True
    (tmp_path / "ds.json").write_text(json.dumps(config))
    run = load_deepspeed_config(tmp_path / "ds.json", max_steps=50, micro_batch_size=3, gradient_accumulation_steps=4,
                                lr=3e-3, warmup_steps=80)
    assert run.activation_checkpointing and run.dtype == torch.bfloat16
    assert (run.micro_batch_size, run.gradient_accumulation_steps, run.zero_stage) == (3, 4, 2)
    assert run.deepspeed["optimizer"]["params"]["lr"] == 3e-3
    params = run.deepspeed["scheduler"]["params"]
    assert params["warmup_max_lr"] == 3e-3 and params["warmup_num_steps"] == 50 and params["total_num_steps"] == 50


def test_fp16_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="fp16, which DeepSpeed supports on GPUs only"):
        load_deepspeed_config("configs/deepspeed/zero2_fp16.json", max_steps=10, has_gpu=False)


def test_train_batch_size_is_refused(tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4}))
    with pytest.raises(ValueError, match="sets train_batch_size"):
        load_deepspeed_config(tmp_path / "ds.json", max_steps=10)
