"""The `sdpa` backend: attention through torch.nn.functional.scaled_dot_product_attention.

Preferred over `reference` for attention because PyTorch's fused CPU and GPU kernels avoid the fp32
copies and the materialised probability tensor of the reference. Key padding and bottom-right causal
alignment go in as a boolean mask. Query rows with no key are given every key (SDPA would return NaN) and
their output is multiplied by zero, which also zeroes their gradients.

On the CPU, half-precision inputs that need gradients are attended in float32 and the output cast back:
PyTorch's CPU kernel is several times slower backward in bf16 than in float32 (bench/NOTES.md), while its bf16
forward is the faster one for long sequences, so inference stays in the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dispatch import Backend, records_grad, register_backend
from .padding import pad_varlen, padded_allowed


def _sdpa(q, k, v, allowed, dropout_p, softmax_scale):
    """q/k/v (batch, seqlen, nheads, headdim); `allowed` bool broadcastable to (batch, 1, seqlen_q, seqlen_k) or None."""
    dtype = q.dtype
    upcast = q.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16) and records_grad(q, k, v)
    q, k, v = (t.transpose(1, 2).float() if upcast else t.transpose(1, 2) for t in (q, k, v))
    if allowed is None:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=softmax_scale)
        return out.to(dtype).transpose(1, 2)
    has_key = allowed.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~has_key, dropout_p=dropout_p,
                                         scale=softmax_scale)
    return (out * has_key.to(out.dtype)).to(dtype).transpose(1, 2)


def attention(q, k, v, *, attention_mask=None, dropout_p=0.0, softmax_scale=None, causal=False):
    if attention_mask is None and not causal:
        return _sdpa(q, k, v, None, dropout_p, softmax_scale)
    allowed = padded_allowed(attention_mask, q.shape[0], q.shape[1], k.shape[1], causal, q.device)
    return _sdpa(q, k, v, allowed, dropout_p, softmax_scale)


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, dropout_p=0.0,
                     softmax_scale=None, causal=False):
    q_pad, k_pad, v_pad, allowed, q_valid = pad_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal)
    return _sdpa(q_pad, k_pad, v_pad, allowed, dropout_p, softmax_scale)[q_valid]


def _attention_reasons(k, **_inputs) -> list[str]:
    return ["sdpa needs at least one key (seqlen_k is 0)"] if k.shape[1] == 0 else []


def _varlen_reasons(max_seqlen_k, **_inputs) -> list[str]:
    return ["sdpa needs at least one key (max_seqlen_k is 0)"] if max_seqlen_k == 0 else []


register_backend(Backend(
    name="sdpa",
    priority=10,
    unavailable=lambda: None,
    ops={
        "attention": (_attention_reasons, attention),
        "varlen_attention": (_varlen_reasons, varlen_attention),
    },
))
