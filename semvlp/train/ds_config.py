"""DeepSpeed config files: loading, the run's overrides, and semvlp's own activation-checkpointing switch.

`activation_checkpointing.enabled` is semvlp's switch (DeepSpeed has none): when true every encoder layer is
a checkpointed segment run through `deepspeed.checkpointing.checkpoint`, configured by the rest of that section.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

_SCHEDULERS_WITH_TOTAL = ("WarmupDecayLR", "WarmupCosineLR")


@dataclass
class RunConfig:
    deepspeed: dict              # what deepspeed.initialize gets
    activation_checkpointing: bool
    dtype: torch.dtype           # compute dtype of the engine's parameters

    @property
    def micro_batch_size(self) -> int:
        return self.deepspeed["train_micro_batch_size_per_gpu"]

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.deepspeed.get("gradient_accumulation_steps", 1)

    @property
    def zero_stage(self) -> int:
        return self.deepspeed.get("zero_optimization", {}).get("stage", 0)


def load_deepspeed_config(path, *, max_steps: int, micro_batch_size: int | None = None,
                          gradient_accumulation_steps: int | None = None, lr: float | None = None,
                          warmup_steps: int | None = None, has_gpu: bool | None = None) -> RunConfig:
    """Reads a DeepSpeed JSON and applies the command line: batch sizes, learning rate, warm-up, and the
    scheduler's total steps (always the run's max_steps)."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"deepspeed_config: {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"deepspeed_config: {path} is not valid JSON ({err})") from err
    config = copy.deepcopy(config)
    has_gpu = torch.cuda.is_available() if has_gpu is None else has_gpu
    if config.get("fp16", {}).get("enabled") and not has_gpu:
        raise ValueError(f"deepspeed_config: {path} enables fp16, which DeepSpeed supports on GPUs only; "
                         "use a bf16 or fp32 config on the CPU")
    if "train_batch_size" in config:
        raise ValueError(f"deepspeed_config: {path} sets train_batch_size; set train_micro_batch_size_per_gpu and "
                         "gradient_accumulation_steps instead (the global batch follows from the world size)")
    if micro_batch_size is not None:
        config["train_micro_batch_size_per_gpu"] = micro_batch_size
    if gradient_accumulation_steps is not None:
        config["gradient_accumulation_steps"] = gradient_accumulation_steps
    if "train_micro_batch_size_per_gpu" not in config:
        raise ValueError(f"deepspeed_config: {path} lacks train_micro_batch_size_per_gpu")
    if lr is not None:
        config.setdefault("optimizer", {}).setdefault("params", {})["lr"] = lr
    scheduler = config.get("scheduler", {})
    params = scheduler.get("params", {})
    if lr is not None and "warmup_max_lr" in params:
        params["warmup_max_lr"] = lr
    if warmup_steps is not None:
        params["warmup_num_steps"] = warmup_steps
    if scheduler.get("type") in _SCHEDULERS_WITH_TOTAL:
        params["total_num_steps"] = max_steps
        params["warmup_num_steps"] = min(params.get("warmup_num_steps", 0), max_steps)
    checkpointing = config.get("activation_checkpointing", {})
    enabled = bool(checkpointing.pop("enabled", False))
    dtype = torch.bfloat16 if config.get("bf16", {}).get("enabled") else (
        torch.float16 if config.get("fp16", {}).get("enabled") else torch.float32)
    return RunConfig(config, enabled, dtype)
