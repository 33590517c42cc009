"""Fine-tuning under DeepSpeed: the engine, checkpoints, metrics and data order of pretraining (semvlp.train),
driving a downstream model. Launched like pretraining (`deepspeed` or `torchrun`, or one plain process).

Step s reads the s-th global batch of a seeded per-epoch permutation (`MicroBatchSampler`), and its dropout RNG is
seeded from (seed, step, rank): a run resumed from a checkpoint computes exactly what the uninterrupted run did.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param

from ..data.task_datasets import collate
from ..train.checkpoint import CheckpointManager
from ..train.distributed import Distributed
from ..train.ds_config import RunConfig, load_deepspeed_config
from ..train.engine import build_engine
from ..train.loop import step_seed
from ..train.metrics import MetricsLogger
from ..train.run_data import MicroBatchSampler, ranks_on_node, resolve_num_workers
from ..train.run_folder import remove_history
from .loop import FinetuneOptions, task_loss

logger = logging.getLogger("semvlp.finetune")


@dataclass
class EngineOptions:
    """What the DeepSpeed path adds to FinetuneOptions (the batch size there is the micro-batch of one rank)."""

    deepspeed_config: str                        # DeepSpeed JSON (a preset name is resolved by the CLI)
    gradient_accumulation_steps: int | None = None   # None: the config file's
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = False                         # continue from OUTPUT/checkpoints/latest
    overwrite: bool = False                      # remove an earlier run's checkpoints and metrics first
    precision: str = "auto"                      # as `semvlp pretrain` (semvlp.train.ds_config): may defer to the file

    def __post_init__(self):
        for name in ("checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")
        if self.gradient_accumulation_steps is not None and self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps: expected a positive int, got "
                             f"{self.gradient_accumulation_steps}")
        if self.resume and self.overwrite:
            raise ValueError("resume, overwrite: pass one of them (--resume continues the run in the output folder, "
                             "--overwrite deletes it)")


def engine_config(options: FinetuneOptions, engine: EngineOptions) -> RunConfig:
    """The DeepSpeed config with the fine-tuning command line applied: micro-batch, accumulation, lr, warm-up,
    total steps, weight decay, gradient clipping and precision."""
    run = load_deepspeed_config(engine.deepspeed_config, max_steps=options.steps,
                                micro_batch_size=options.batch_size,
                                gradient_accumulation_steps=engine.gradient_accumulation_steps, lr=options.lr,
                                warmup_steps=options.warmup_steps, precision=engine.precision)
    run.deepspeed.setdefault("optimizer", {}).setdefault("params", {})["weight_decay"] = options.weight_decay
    run.deepspeed["gradient_clipping"] = options.max_grad_norm
    return run


def _full_fp32(param: torch.nn.Parameter) -> torch.Tensor:
    """One parameter whole, in fp32: the optimizer's master copy, or the parameter itself where the optimizer
    holds none (gathered if ZeRO-3 partitions it; GatheredParameters is a no-op otherwise)."""
    master = safe_get_full_fp32_param(param)
    if master is not None:
        return master
    with deepspeed.zero.GatheredParameters([param]):
        return param.detach().float().clone()


def _fp32_weights(engine, buffers: dict[str, torch.Tensor], device: torch.device) -> torch.nn.Module:
    """A plain copy of the engine's model in fp32 with the optimizer's master weights (all ranks call this: ZeRO
    gathers them) and the buffers as they were before the engine cast them. A new module rather than the engine's
    own: under ZeRO-3 that one holds partitions and gathers them through collectives on every forward."""
    module = engine.module
    weights = {name: _full_fp32(p) for name, p in module.named_parameters()}
    plain = type(module)(module.config, **module.init_args())
    with torch.no_grad():
        for name, p in plain.named_parameters():
            p.copy_(weights[name])
        for name, b in plain.named_buffers():
            b.copy_(buffers[name])
    return plain.to(device)


def finetune_with_engine(model: torch.nn.Module, dataset, options: FinetuneOptions, engine_options: EngineOptions,
                         output, env: Distributed, num_workers: int | str = 0) -> torch.nn.Module:
    """Trains `model` for options.steps optimizer steps under DeepSpeed, with checkpoints every
    engine_options.checkpoint_every steps and at the end, and OUTPUT/metrics.jsonl and tensorboard/ (rank 0);
    each rank reads its micro-batches with `num_workers` DataLoader processes ("auto": `resolve_num_workers`).
    Returns the trained model in fp32 on every rank. options.precision is set to the precision the engine ran."""
    out = Path(output)
    if engine_options.overwrite and env.is_main:
        remove_history(out)
    run = engine_config(options, engine_options)
    options.precision = run.precision.name
    micro, accumulation = run.micro_batch_size, run.gradient_accumulation_steps
    box_dim = model.config.visual_pos_dim
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    engine = build_engine(model, run, alternating=False)
    checkpoints = CheckpointManager(out / "checkpoints", env.is_main, keep=engine_options.keep_checkpoints)
    start = checkpoints.start_step(engine, engine_options.resume)
    sampler = MicroBatchSampler(len(dataset), micro, accumulation, env.world_size, env.rank, options.seed, start,
                                options.steps)
    workers, why = resolve_num_workers(num_workers, in_memory=False, local_ranks=ranks_on_node(env.world_size))
    # The sampler fixes which samples each micro-batch holds and a sample draws its randomness from (seed, epoch,
    # index), so the batches do not depend on the number of workers.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                         collate_fn=functools.partial(collate, box_dim=box_dim))
    if env.is_main:
        print(run.precision.describe(), flush=True)
        logger.info("DataLoader: %d worker processes per rank (%s)", workers, why)
        logger.info("fine-tuning under DeepSpeed: global batch %d (%d x %d accumulation x %d ranks); ZeRO stage %d, "
                    "%s; steps %d..%d", sampler.global_batch, micro, accumulation, env.world_size, run.zero_stage,
                    run.precision.name, start, options.steps)
    saved = {"finetune.json": json.dumps(asdict(options), indent=2) + "\n",
             "config.json": json.dumps(model.config.to_dict(), indent=2) + "\n"}
    metrics = MetricsLogger(out, env.is_main, options.steps, start)
    batches = iter(loader)
    engine.train()
    try:
        for step in range(start, options.steps):
            torch.manual_seed(step_seed(options.seed, step, env.rank))
            began = time.perf_counter()
            total = torch.zeros(1, dtype=torch.float64)
            for _ in range(accumulation):
                batch = next(batches).to(env.device)
                logits = engine(*batch.inputs(run.dtype), mode=options.mode)
                loss = task_loss(options.task, logits, batch.targets)
                engine.backward(loss)
                engine.step()
                total += loss.item()
            dist.all_reduce(total)
            mean = total.item() / (accumulation * env.world_size)
            if not math.isfinite(mean):
                raise FloatingPointError(f"step {step + 1}: the {options.task} loss is {mean}; lower --lr")
            metrics.log_step({"step": step + 1, "epoch": step // sampler.steps_per_epoch, "mode": options.mode,
                              "loss": mean, "losses": {options.task: mean}, "lr": engine.get_lr()[0],
                              "samples_per_s": sampler.global_batch / (time.perf_counter() - began)})
            done = step + 1
            if done % engine_options.checkpoint_every == 0 or done == options.steps:
                checkpoints.save(engine, done, saved)
    finally:
        metrics.close()
    return _fp32_weights(engine, buffers, env.device)
