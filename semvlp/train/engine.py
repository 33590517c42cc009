"""The DeepSpeed engine around a SemVLP model (pretraining or downstream), with what ZeRO-3 needs to know about it.

ZeRO-3 gathers a module's own parameters when its forward starts and frees them when it ends. Two places in
the model need more:
- The MLM decoder of the pretraining model is tied: `mlm_head` multiplies by the word-embedding matrix, which
  belongs to the text embeddings. It is registered as an external parameter of `mlm_head`, so it is gathered for
  that forward (and its backward) too. DeepSpeed 0.19's parameter getter would also notice the access in eager mode and
  attach the weight to whichever module is running (here the whole model); the registration states the
  dependency where it is, and does not rely on the getter (which stands aside under torch.compile).
- The attention and feed-forward sub-blocks call `F.linear` on their child Linear layers' weights without
  calling those children, so those sub-blocks are ZeRO-3 leaf modules: entering one gathers all of its
  parameters at once, with one hook instead of one per child. The leaves are the sub-blocks, not whole
  layers, so a single-stream step never enters a cross-attention block and never gathers its weights.
Modes change which modules run. ZeRO-3 prefetches along the module order traced on an earlier step; a mode
switch invalidates that trace mid-step, and the parameters it had prefetched are released and gathered again
when they are reached. With an alternating schedule prefetching is therefore switched off
(`stage3_prefetch_bucket_size` 0): every block gathers its own parameters on entry, once per pass.
In single-stream steps the cross-attention parameters get no gradient. ZeRO 1/2 reduce a zero gradient for
them (`ignore_unused_parameters`, true by default, is set explicitly) and ZeRO-3 never gathers them; every
rank runs the same mode in a step, so all ranks take part in the same collectives and nothing waits for a rank
that skipped a block. The flattened optimizer partitions still give those parameters an Adam update from
their momentum, and ZeRO-2 and ZeRO-3 do not do this identically: a run reproduces across rank layouts of
one stage (tested), not across stages.

`compile_engine` compiles the model inside the engine (DeepSpeed's `engine.compile`, which compiles the module in
place: parameter names, hooks and checkpoints stay as they are). It is meant for token-budget batches, whose
shapes never change: one graph per stream mode, and on a GPU mode "reduce-overhead" replays them as CUDA graphs.
"""

from __future__ import annotations

import logging

import deepspeed
import torch
from torch import nn

from ..nn import FeedForward, PackedCrossAttention, PackedSelfAttention
from ..ops import trace_seed_draws
from .ds_config import RunConfig
from .safe_load import WeightsOnlyCheckpointEngine

logger = logging.getLogger(__name__)

ZERO3_LEAF_MODULES = (PackedSelfAttention, PackedCrossAttention, FeedForward)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """BERT's rule: no weight decay on biases, LayerNorm weights and other vectors."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def prepare_for_zero3(model: nn.Module) -> None:
    """Pretraining models tie the MLM decoder to the word embeddings; the downstream models have no MLM head."""
    if hasattr(model, "mlm_head"):
        deepspeed.zero.register_external_parameter(model.mlm_head,
                                                   model.semvlp.text_embeddings.word_embeddings.weight)
    deepspeed.utils.set_z3_leaf_modules(model, list(ZERO3_LEAF_MODULES))


def build_engine(model: nn.Module, run: RunConfig, alternating: bool):
    """deepspeed.initialize with the model's parameter groups; returns the engine."""
    logger.info(run.precision.describe())
    config = run.deepspeed
    zero = config.setdefault("zero_optimization", {"stage": 0})
    if run.zero_stage in (1, 2):
        zero.setdefault("ignore_unused_parameters", True)
    if run.zero_stage == 3:
        prepare_for_zero3(model)
        if alternating and zero.get("stage3_prefetch_bucket_size", 1) != 0:
            logger.info("ZeRO-3 with alternating modes: stage3_prefetch_bucket_size set to 0 (see semvlp.train.engine)")
            zero["stage3_prefetch_bucket_size"] = 0
    if run.activation_checkpointing:
        section = config.get("activation_checkpointing", {})
        deepspeed.checkpointing.configure(
            None, partition_activations=section.get("partition_activations", False),
            contiguous_checkpointing=section.get("contiguous_memory_optimization", False),
            checkpoint_in_cpu=section.get("cpu_checkpointing", False),
            synchronize=section.get("synchronize_checkpoint_boundary", False))
        model.semvlp.encoder.checkpoint_fn = deepspeed.checkpointing.checkpoint
    weight_decay = config.get("optimizer", {}).get("params", {}).get("weight_decay", 0.0)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=parameter_groups(model, weight_decay),
                                           config=config)
    WeightsOnlyCheckpointEngine.install(engine)  # DeepSpeed's own reads checkpoints with weights_only=False
    return engine


def compile_engine(engine, device: torch.device, backend: str = "inductor") -> None:
    """torch.compile the engine's model: with CUDA graphs ("reduce-overhead") on a GPU, the default mode elsewhere;
    the dropout seed draws of the Philox backends are traced into the graph."""
    trace_seed_draws()
    compile_kwargs = {"mode": "reduce-overhead"} if device.type == "cuda" else {}
    logger.info("compiling the model: backend %s, %s", backend, compile_kwargs or "default mode")
    engine.compile(backend=backend, compile_kwargs=compile_kwargs)
