"""End-to-end pretraining-step throughput (forward, backward, AdamW step) of semvlp against Hugging Face peers.

Cases, each a comparison on one batch from `semvlp.data.random_batch` (the peers get it padded):
  two_stream     SemVLPForPretraining, mode="two"    vs  LxmertForPreTraining (l = r = x = the plugged layers)
  single_stream  SemVLPForPretraining, mode="single" vs  VisualBertForPreTraining (same layer count)
  bert_text      BertForPreTraining patched with semvlp.patch_hf_model vs unpatched, on the batch's text
  bert_attention BertForPreTraining with attn_implementation="semvlp" vs "sdpa" (transformers' default), same text
Providers: hf (the peer, baseline), semvlp, and both under torch.compile with --compile (opt-in: a compilation
takes minutes on the CPU, and on the GPU machine's torch 2.11 compiling LXMERT's step aborted the process).

    python -m bench.bench_e2e --quick            # tiny sizes on the CPU, seconds
    python -m bench.bench_e2e                    # small on the CPU, BERT-base on a GPU (bf16)
    python -m bench.bench_e2e --size base --batch-size 64
"""

from __future__ import annotations

import dataclasses

import torch

import semvlp
import semvlp.integrations.hf  # noqa: F401  (registers attn_implementation="semvlp")
from bench import harness
from bench.e2e_inputs import (bert_inputs, lxmert_inputs, padded, step_flops, text_step_flops, to_device,
                              visual_bert_inputs)
from semvlp.data import random_batch
from semvlp.model import SemVLPConfig, SemVLPForPretraining
from semvlp.model.config import PRETRAINING_TASKS

# The peers' tasks only: none of them grounds phrases in regions or has phrases predict where their regions lie.
PEER_TASKS = {task: task not in ("grounding", "region_position") for task in PRETRAINING_TASKS}

# Model sizes and batch shapes. Vocabulary, detector features and label spaces are the real ones from
# "small" up, so the heads cost what they cost in pretraining.
SIZES = {
    "tiny": dict(model=dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, max_position_embeddings=64, visual_feat_dim=32, max_regions=8,
                            num_region_labels=16, num_qa_labels=32),
                 batch_size=4, text_len=12, num_regions=8),
    "small": dict(model=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                             max_position_embeddings=64, max_regions=36),
                  batch_size=16, text_len=20, num_regions=36),
    "base": dict(model=dict(max_regions=36), batch_size=128, text_len=20, num_regions=36),
}
CASES = ("two_stream", "single_stream", "bert_text", "bert_attention")


def add_arguments(p) -> None:
    p.add_argument("--size", choices=sorted(SIZES), default=None,
                   help="model size (default: tiny with --quick, base on a GPU, small on the CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per step (default: the size's)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile providers")
    p.add_argument("--lr", type=float, default=1e-4)


def lxmert_layers(config: SemVLPConfig) -> dict[str, int]:
    """l = r = (layers without the plug), x = plugged layers: each stream then runs as many self-attention and
    feed-forward blocks as semvlp's two-stream pass, and as many cross-attention blocks."""
    x = len(config.cross_layers)
    return {"l_layers": config.num_hidden_layers - x, "r_layers": config.num_hidden_layers - x, "x_layers": x}


def _shared(config: SemVLPConfig) -> dict:
    return dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
                hidden_act=config.hidden_act, hidden_dropout_prob=config.hidden_dropout_prob,
                attention_probs_dropout_prob=config.attention_probs_dropout_prob,
                max_position_embeddings=config.max_position_embeddings)


def build_lxmert(config: SemVLPConfig):
    from transformers import LxmertConfig, LxmertForPreTraining

    # No attribute head: semvlp's region tasks are object labels and feature regression.
    return LxmertForPreTraining(LxmertConfig(**_shared(config), **lxmert_layers(config),
                                             visual_feat_dim=config.visual_feat_dim,
                                             visual_pos_dim=config.visual_pos_dim,
                                             num_object_labels=config.num_region_labels,
                                             num_qa_labels=config.num_qa_labels, visual_attr_loss=False))


def build_visual_bert(config: SemVLPConfig):
    from transformers import VisualBertConfig, VisualBertForPreTraining

    return VisualBertForPreTraining(VisualBertConfig(**_shared(config), num_hidden_layers=config.num_hidden_layers,
                                                     visual_embedding_dim=config.visual_feat_dim,
                                                     layer_norm_eps=config.layer_norm_eps))


def build_bert(config: SemVLPConfig):
    from transformers import BertConfig, BertForPreTraining

    return BertForPreTraining(BertConfig(**_shared(config), num_hidden_layers=config.num_hidden_layers,
                                         layer_norm_eps=config.layer_norm_eps))


def _cast(value, dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    return value


def _training_step(model: torch.nn.Module, loss_fn, lr: float, compile_kwargs: dict | bool | None):
    """A zero-argument step (zero_grad, forward, backward, AdamW step), run once to check the loss is finite;
    `compile_kwargs` a dict: torch.compile the model with them (None or False: eager)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
    compiled = isinstance(compile_kwargs, dict)
    if compiled:
        semvlp.ops.trace_seed_draws()
    runner = torch.compile(model, **compile_kwargs) if compiled else model

    def step():
        if compiled:
            torch.compiler.cudagraph_mark_step_begin()  # "reduce-overhead": a new step may reuse CUDA graph memory
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(runner)
        loss.backward()
        optimizer.step()
        return loss

    loss = step()
    if not torch.isfinite(loss.detach()).all():
        raise RuntimeError(f"the first step's loss is {loss.item()}, not finite")
    return step


def build(args) -> harness.Benchmark:
    """End-to-end pretraining-step throughput: semvlp against LXMERT, VisualBERT and BERT."""
    device = args.device
    size_name = args.size or ("tiny" if args.quick else "base" if device.type == "cuda" else "small")
    size = SIZES[size_name]
    batch_size = args.batch_size or size["batch_size"]
    compile_on = args.compile
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = SemVLPConfig(**size["model"], tasks=PEER_TASKS)
    batch = random_batch(config, batch_size, seed=0, text_len=size["text_len"], num_regions=size["num_regions"])
    hf_batch = padded(batch)
    layout = batch.layout
    common = {"size": size_name, "batch_size": batch_size, "dtype": str(dtype).replace("torch.", ""),
              "hidden": config.hidden_size, "layers": config.num_hidden_layers,
              "heads": config.num_attention_heads, "ffn": config.intermediate_size,
              "text_tokens": layout.total_text, "regions": layout.total_regions,
              "padded_text_len": hf_batch.input_ids.shape[1], "mlm_positions": batch.mlm_positions.numel()}

    def semvlp_inputs(mode):
        def make(dev):
            on_device = batch.to(dev)
            floats = {f: getattr(on_device, f).to(dtype) for f in ("region_features", "region_boxes",
                                                                   "mrm_feature_targets")}
            return {"mode": mode, "batch": dataclasses.replace(on_device, **floats), "device": dev}
        return make

    def hf_inputs(builder, to_kwargs, drop_in=None):
        """drop_in: None (the model as transformers builds it), "patch" (semvlp.patch_hf_model) or an
        attn_implementation name."""
        def make(dev):
            return {"builder": builder, "kwargs": _cast(to_device(to_kwargs(hf_batch), dev), dtype), "device": dev,
                    "drop_in": drop_in}
        return make

    cases = [
        harness.Case("two_stream", lambda dev: {"semvlp": semvlp_inputs("two")(dev),
                                                "hf": hf_inputs(build_lxmert, lxmert_inputs)(dev)},
                     params={**common, "semvlp": "SemVLPForPretraining mode=two",
                             "hf": "LxmertForPreTraining " + " ".join(f"{k}={v}" for k, v in
                                                                      lxmert_layers(config).items())},
                     flops=step_flops(batch, config, "two"),
                     items={"samples": batch_size, "tokens": layout.total_tokens}),
        harness.Case("single_stream", lambda dev: {"semvlp": semvlp_inputs("single")(dev),
                                                   "hf": hf_inputs(build_visual_bert, visual_bert_inputs)(dev)},
                     params={**common, "semvlp": "SemVLPForPretraining mode=single",
                             "hf": "VisualBertForPreTraining"},
                     flops=step_flops(batch, config, "single"),
                     items={"samples": batch_size, "tokens": layout.total_tokens}),
        harness.Case("bert_text", lambda dev: {"semvlp": hf_inputs(build_bert, bert_inputs, "patch")(dev),
                                               "hf": hf_inputs(build_bert, bert_inputs)(dev)},
                     params={**common, "semvlp": "BertForPreTraining + semvlp.patch_hf_model",
                             "hf": "BertForPreTraining"},
                     flops=text_step_flops(batch, config),
                     items={"samples": batch_size, "tokens": layout.total_text}),
        harness.Case("bert_attention", lambda dev: {"semvlp": hf_inputs(build_bert, bert_inputs, "semvlp")(dev),
                                                    "hf": hf_inputs(build_bert, bert_inputs, "sdpa")(dev)},
                     params={**common, "semvlp": 'BertForPreTraining attn_implementation="semvlp"',
                             "hf": 'BertForPreTraining attn_implementation="sdpa"'},
                     flops=text_step_flops(batch, config),
                     items={"samples": batch_size, "tokens": layout.total_text}),
    ]

    def make_model(inp):
        torch.manual_seed(0)
        if "mode" in inp:
            return SemVLPForPretraining(config).to(inp["device"], dtype)
        model = inp["builder"](config).to(inp["device"], dtype)
        if inp["drop_in"] == "patch":
            record = semvlp.patch_hf_model(model)
            if record.skipped:
                raise RuntimeError(f"patching left modules unpatched:\n{record.summary()}")
        elif inp["drop_in"] is not None:
            model.set_attn_implementation(inp["drop_in"])
        return model

    def loss_fn(inp):
        if "mode" in inp:
            return lambda model: model(inp["batch"], mode=inp["mode"]).loss
        return lambda model: model(**inp["kwargs"]).loss

    def provider(which, compiled):
        def make(inputs):
            if compiled and not compile_on:
                raise harness.Unsupported("torch.compile providers are off here (pass --compile)")
            inp = inputs[which]
            # semvlp's step is one graph (no break: fullgraph), replayed as CUDA graphs on a GPU.
            compile_kwargs = None if not compiled else {} if which == "hf" else {
                "fullgraph": True, "mode": "reduce-overhead" if device.type == "cuda" else "default"}
            return _training_step(make_model(inp), loss_fn(inp), args.lr, compile_kwargs)
        return make

    providers = {"hf": provider("hf", False), "semvlp": provider("semvlp", False),
                 "hf_compile": provider("hf", True), "semvlp_compile": provider("semvlp", True)}
    quick = args.quick
    return harness.Benchmark(f"e2e_{size_name}", cases, providers, baseline="hf",
                             budget_s=30 if quick else 420 if device.type == "cuda" else 300,
                             rounds=1 if quick else 3,
                             description=build.__doc__)


if __name__ == "__main__":
    raise SystemExit(harness.main(build, add_arguments=add_arguments))
