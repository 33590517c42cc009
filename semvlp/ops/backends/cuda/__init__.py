"""The `cuda` backend: the fused CUDA kernels of csrc/ (the extension semvlp._C).

What it runs: packed attention (`varlen_attention`, and padded `attention` without an attention_mask as
equal-length segments) in fp16/bf16 for head dims 32, 64 and 128 with max_seqlen_k up to MAX_SEQLEN_K,
causal or not, with dropout; `add_layer_norm` and `layer_norm` in fp32/fp16/bf16 for hidden sizes up to
8192. Everything on CUDA tensors only.

Dispatch rule, from the GPU runs on an H100 (bf16; bench/results/attention_nvidia-h100-80gb-hbm3_20261127T
031644Z.json, layer_norm_nvidia-h100-80gb-hbm3_20261127T032036Z.json, and the first visit's files of
2026-11-26, which agree): `auto` takes cuda for `varlen_attention` wherever it supports the inputs (packed
self-attention over 256 x 140 tokens fwd+bwd: 0.70 ms against 1.46 ms for triton and 0.93 ms for SDPA with
the padding mask). It leaves cuda aside for padded `attention` (sdpa measured faster: 0.37 vs 0.50 ms
fwd+bwd for 20x36 cross-attention) and for the LayerNorms (the torch backend measured faster: 0.59 vs
0.75 ms fwd+bwd at 35840 x 768). Every GPU test passed there, torch.compile of the ops included. Forced,
cuda runs everything it supports.
"""

from __future__ import annotations

import torch

from .... import _ext
from ...dispatch import Backend, register_backend
from . import attention, layer_norm

# Longest key segment the attention kernel is dispatched for; beyond it triton's tiled kernel serves.
MAX_SEQLEN_K = 512
HEAD_DIMS = (32, 64, 128)
ATTENTION_DTYPES = (torch.float16, torch.bfloat16)
LAYER_NORM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HIDDEN = 8192


def _on_cuda(name: str, t: torch.Tensor) -> list[str]:
    return [] if t.is_cuda else [f"cuda needs CUDA tensors, got {name} on {t.device}"]


def _attention_reasons(q: torch.Tensor, max_seqlen_k: int) -> list[str]:
    reasons = _on_cuda("q", q)
    if q.dtype not in ATTENTION_DTYPES:
        reasons.append(f"cuda attention runs float16/bfloat16, got {q.dtype}")
    if q.shape[-1] not in HEAD_DIMS:
        reasons.append(f"cuda attention supports head dims {HEAD_DIMS}, got {q.shape[-1]}")
    if max_seqlen_k > MAX_SEQLEN_K:
        reasons.append(f"max_seqlen_k {max_seqlen_k} is above the cuda kernel's cap of {MAX_SEQLEN_K}")
    return reasons


def _varlen_reasons(q, max_seqlen_k, **_inputs) -> list[str]:
    return _attention_reasons(q, max_seqlen_k)


def _padded_reasons(q, k, attention_mask, **_inputs) -> list[str]:
    reasons = _attention_reasons(q, k.shape[1])
    if attention_mask is not None:
        reasons.append("cuda runs padded attention without attention_mask only (pack with varlen_attention)")
    return reasons


def _layer_norm_reasons(x, residual=None, **_inputs) -> list[str]:
    reasons = _on_cuda("x", x)
    if x.dtype not in LAYER_NORM_DTYPES:
        reasons.append(f"cuda layer norm runs float32/float16/bfloat16, got {x.dtype}")
    if residual is not None and residual.dtype != x.dtype:
        reasons.append(f"x is {x.dtype} and residual {residual.dtype}: the kernel takes one dtype for both")
    if not 1 <= x.shape[-1] <= MAX_HIDDEN:
        reasons.append(f"cuda layer norm supports hidden sizes 1 to {MAX_HIDDEN}, got {x.shape[-1]}")
    return reasons


def _auto_reasons(op: str, inputs: dict) -> list[str]:
    """The dispatch rule of the module docstring."""
    if op != "varlen_attention":
        return [f"{'sdpa' if op == 'attention' else 'the torch backend'} measured faster for {op} on an H100"]
    return []


register_backend(Backend(
    name="cuda",
    priority=30,
    unavailable=_ext.unavailable,
    auto_reasons=_auto_reasons,
    philox_dropout=True,
    ops={
        "attention": (_padded_reasons, attention.attention),
        "varlen_attention": (_varlen_reasons, attention.varlen_attention),
        "add_layer_norm": (_layer_norm_reasons, layer_norm.add_layer_norm),
        "layer_norm": (_layer_norm_reasons, layer_norm.layer_norm),
    },
))
