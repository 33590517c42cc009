"""DeepSpeed config files: loading, the run's overrides, and semvlp's own activation-checkpointing switch.

`activation_checkpointing.enabled` is semvlp's switch (DeepSpeed has none): when true every encoder layer is
a checkpointed segment run through `deepspeed.checkpointing.checkpoint`, configured by the rest of that section.

Precision: an explicit `--precision bf16|fp16|fp32` wins over the file. With `--precision auto` (the default) a
file's `"bf16": {"enabled": true}` or `"fp16": {"enabled": true}` is kept, a file without either is fp32
(DeepSpeed's default), and `"enabled": "auto"` (the zeroN_auto.json configs; the Hugging Face convention) is
filled in from the hardware by `semvlp.train.precision`. DeepSpeed receives plain true/false either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.config import read_json_object
from .precision import Precision, resolve_precision

_SCHEDULERS_WITH_TOTAL = ("WarmupDecayLR", "WarmupCosineLR")


@dataclass
class RunConfig:
    deepspeed: dict              # what deepspeed.initialize gets
    activation_checkpointing: bool
    precision: Precision         # the engine's compute precision, and why

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the engine's parameters."""
        return self.precision.dtype

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
                          warmup_steps: int | None = None, has_gpu: bool | None = None,
                          precision: str = "auto") -> RunConfig:
    """Reads a DeepSpeed JSON and applies the command line: batch sizes, learning rate, warm-up, the scheduler's
    total steps (always the run's max_steps) and the precision (see the module's docstring)."""
    path = Path(path)
    config = read_json_object(path, "deepspeed_config")
    has_gpu = torch.cuda.is_available() if has_gpu is None else has_gpu
    chosen = _apply_precision(config, path, precision, torch.device("cuda" if has_gpu else "cpu"))
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
    return RunConfig(config, enabled, chosen)


def _apply_precision(config: dict, path: Path, requested: str, device: torch.device) -> Precision:
    """Resolves the precision and writes it into the config's bf16/fp16 sections as plain booleans."""
    enabled = {}
    for name in ("bf16", "fp16"):
        section = config.get(name, {})
        if not isinstance(section, dict):
            raise ValueError(f"deepspeed_config: {path}: {name} must be an object like {{\"enabled\": true}}, "
                             f"got {section!r}")
        value = section.get("enabled", False)
        if not (isinstance(value, bool) or value == "auto"):
            raise ValueError(f"deepspeed_config: {path}: {name}.enabled must be true, false or \"auto\", got {value!r}")
        enabled[name] = value
    if enabled["bf16"] is True and enabled["fp16"] is True:
        raise ValueError(f"deepspeed_config: {path} enables both bf16 and fp16; enable one")
    from_file = next((name for name in ("bf16", "fp16") if enabled[name] is True), None)
    if requested != "auto" or "auto" in enabled.values():
        chosen = resolve_precision(requested, device)
    elif from_file == "fp16" and device.type != "cuda":
        raise ValueError(f"deepspeed_config: {path} enables fp16, which DeepSpeed supports on GPUs only; "
                         "use a bf16 or fp32 config on the CPU")
    elif from_file is not None:
        chosen = resolve_precision(from_file, device, source=f"set by {path.name}")
    else:
        chosen = Precision("fp32", f"{path.name} enables neither bf16 nor fp16")
    for name in ("bf16", "fp16"):
        if name in config or chosen.name == name:
            config.setdefault(name, {})["enabled"] = chosen.name == name
    return chosen
