"""Fine-tuning a downstream model: AdamW with linear warm-up and decay, one stream mode, plain PyTorch in one
process. `semvlp finetune --deepspeed-config` trains under DeepSpeed instead (semvlp.finetune.engine_loop).

A fine-tuned model folder holds model.safetensors, config.json (the model) and README.md in the save_pretrained
layout (so the model's class loads it with from_pretrained), finetune.json (task, mode, answer vocabulary,
options) and metrics.jsonl (one line per step).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.task_datasets import DOWNSTREAM_TASKS, collate
from ..model import (SemVLPConfig, SemVLPForImageTextMatching, SemVLPForPairedReasoning, SemVLPForQuestionAnswering,
                     load_backbone, soft_target_loss)
from ..model.config import MODES
from ..model.pretrained_io import read_pretrained_config
from ..train.precision import PRECISIONS, autocast, resolve_precision
from ..train.run_data import MicroBatchSampler


@dataclass
class FinetuneOptions:
    task: str
    mode: str = "single"
    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "fp32"     # auto | bf16 | fp16 | fp32: autocast dtype of the forward pass (weights stay fp32)
    answers: list[str] = field(default_factory=list)   # qa: the answer vocabulary, in logit order (set from data)

    def __post_init__(self):
        if self.task not in DOWNSTREAM_TASKS:
            raise ValueError(f"task: expected one of {DOWNSTREAM_TASKS}, got {self.task!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise ValueError(f"lr, warmup_steps: expected lr > 0 and warmup_steps >= 0, got {self.lr}, "
                             f"{self.warmup_steps}")


def build_model(task: str, config: SemVLPConfig, num_answers: int | None = None) -> torch.nn.Module:
    if task == "qa":
        return SemVLPForQuestionAnswering(config, num_answers or 0)
    if task == "itm":
        return SemVLPForImageTextMatching(config)
    if task == "nlvr2":
        return SemVLPForPairedReasoning(config)
    raise ValueError(f"task: expected one of {DOWNSTREAM_TASKS}, got {task!r}")


def task_loss(task: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return soft_target_loss(logits, targets) if task == "qa" else F.cross_entropy(logits.float(), targets)


def load_pretrained(path) -> tuple[SemVLPConfig, dict[str, torch.Tensor]]:
    """(config, state_dict) of a pretraining export: a folder with model.safetensors and config.json (what
    `semvlp pretrain --export` writes to OUTPUT/export), or a pretraining run folder that holds export/."""
    folder = Path(path)
    if (folder / "export").is_dir() and not (folder / "model.safetensors").exists():
        folder = folder / "export"
    weights, config = folder / "model.safetensors", folder / "config.json"
    if not weights.is_file() or not config.is_file():
        raise ValueError(f"init: expected model.safetensors and config.json in {folder} (a pretraining export, "
                         f"`semvlp pretrain --export`, or `semvlp export`)")
    return read_pretrained_config(config, "init")[0], safetensors.torch.load_file(str(weights))


def _lr_factor(step: int, options: FinetuneOptions) -> float:
    if step < options.warmup_steps:
        return (step + 1) / options.warmup_steps
    return max(0.0, (options.steps - step) / max(1, options.steps - options.warmup_steps))


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def finetune(model: torch.nn.Module, dataset, options: FinetuneOptions, metrics_path=None,
             progress: bool = True, num_workers: int = 0) -> list[dict]:
    """Trains `model` in place for options.steps steps on `dataset` (read with (epoch, index) keys, a seeded
    permutation per epoch, by `num_workers` DataLoader processes: the batches are the same with any number);
    returns one record per step (also appended to `metrics_path` as JSON lines)."""
    if len(dataset) < 1:
        raise ValueError("dataset: expected at least one example, got none")
    device = next(model.parameters()).device
    box_dim = model.config.visual_pos_dim
    precision = resolve_precision(options.precision, device)
    # Loss scaling keeps small fp16 gradients from flushing to zero; it does nothing in bf16 and fp32.
    scaler = torch.amp.GradScaler(device.type, enabled=precision.name == "fp16")
    optimizer = torch.optim.AdamW(_parameter_groups(model, options.weight_decay), lr=options.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, options))
    batch_size = min(options.batch_size, len(dataset))
    sampler = MicroBatchSampler(len(dataset), batch_size, 1, 1, 0, options.seed, 0, options.steps)
    # The loader's own generator seeds its workers, so the global RNG (dropout) draws what it drew without one.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=partial(collate, box_dim=box_dim),
                                         num_workers=num_workers, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(options.seed))
    torch.manual_seed(options.seed)
    model.train()
    records, log = [], open(metrics_path, "w") if metrics_path is not None else None
    bar = tqdm(loader, desc=f"fine-tune {options.task} ({options.mode}-stream)", disable=not progress,
               unit="step", leave=False)
    began = time.perf_counter()
    try:
        for step, batch in enumerate(bar):
            batch = batch.to(device, non_blocking=True)
            with autocast(precision, device):
                loss = task_loss(options.task, model(*batch.inputs(), mode=options.mode), batch.targets)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"step {step + 1}: the {options.task} loss is {loss.item()}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            record = {"step": step + 1, "epoch": step // sampler.steps_per_epoch, "loss": loss.item(),
                      "lr": scheduler.get_last_lr()[0], "examples_per_s": len(batch.targets) / (time.perf_counter()
                                                                                                - began)}
            began = time.perf_counter()
            records.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    finally:
        if log is not None:
            log.close()
    return records


def save_finetuned(model: torch.nn.Module, options: FinetuneOptions, folder, vocab=None) -> Path:
    """The save_pretrained layout (with `vocab` copied as vocab.txt when given) plus finetune.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    training = {key: value for key, value in asdict(options).items() if key != "answers"}
    model.save_pretrained(folder, vocab=vocab, training=training)
    (folder / "finetune.json").write_text(json.dumps(asdict(options), indent=2) + "\n")
    return folder


def load_finetuned(folder, device="cpu") -> tuple[torch.nn.Module, FinetuneOptions]:
    folder = Path(folder)
    if not (folder / "finetune.json").is_file():
        raise ValueError(f"model: expected finetune.json in {folder} (a `semvlp finetune` output folder)")
    options = FinetuneOptions(**json.loads((folder / "finetune.json").read_text()))
    config = read_pretrained_config(folder / "config.json", "model")[0]
    model = build_model(options.task, config, len(options.answers))
    model.load_state_dict(safetensors.torch.load_file(str(folder / "model.safetensors"), device=str(device)))
    return model.to(device), options


def init_model(task: str, config: SemVLPConfig, state_dict: dict | None, num_answers: int | None,
               seed: int) -> torch.nn.Module:
    """A downstream model with new heads drawn from `seed`, and the pretrained weights it shares copied in."""
    torch.manual_seed(seed)
    model = build_model(task, config, num_answers)
    if state_dict is not None:
        load_backbone(model, state_dict)
    return model
