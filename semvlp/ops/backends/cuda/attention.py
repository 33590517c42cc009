"""Attention on the CUDA kernels of csrc/ (ops `semvlp::cuda_varlen_attention_fwd/bwd`), with autograd.

Inputs are assumed valid (the public ops in `semvlp.ops.attention` check them; the registered ops check
shapes and dtypes again). With dropout the public op draws `(seed, offset)` once per call, so the mask is the
one of the shared contract in `semvlp/ops/rng.py` (the Triton kernel draws the same mask for the same torch
seed), and the backward regenerates it from the pair.
"""

from __future__ import annotations

import torch

from .... import _ext


class CudaAttention(torch.autograd.Function):
    """Differentiable in q, k, v; the offsets and options are constants."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                dropout_p, seed, offset):
        if cu_seqlens_k is None:  # self-attention's offsets, given once (see varlen_attention)
            cu_seqlens_k = cu_seqlens_q
        out, lse, _ = _ext.ops().cuda_varlen_attention_fwd(
            q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, dropout_p, seed,
            offset, False)
        if any(ctx.needs_input_grad[:3]):
            ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k)
        ctx.options = (max_seqlen_q, max_seqlen_k, softmax_scale, causal, dropout_p, seed, offset)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
        dq, dk, dv = _ext.ops().cuda_varlen_attention_bwd(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k,
                                                          *ctx.options)
        return (dq, dk, dv) + (None,) * 9


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, softmax_scale,
                     dropout_p=0.0, causal=False, dropout_seed=(0, 0)):
    """`semvlp.ops.varlen_attention` on the CUDA kernels (inputs checked; the scale and, with dropout, the
    (seed, offset) pair resolved by the public op)."""
    if cu_seqlens_k is cu_seqlens_q:  # torch.compile cannot trace an autograd.Function given one tensor twice
        cu_seqlens_k = None
    return CudaAttention.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                               dropout_p, *dropout_seed)


def varlen_attention_with_keep_mask(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, dropout_p,
                                    seed, offset, softmax_scale, causal=False):
    """Debug path, no autograd: (out, keep_mask) for a given (seed, offset).

    keep_mask: bool (n_segments, nheads, max_seqlen_q, max_seqlen_k), True = kept, as drawn by the kernel; it
    is defined where the query row and the key lie inside their segments and (causal) the key is visible,
    and False elsewhere (the kernel draws nothing there). Compare it with
    `rng.attention_keep_mask(seed, offset, dropout_p, ...)` on that region.
    """
    out, _, mask = _ext.ops().cuda_varlen_attention_fwd(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, float(softmax_scale), causal,
        float(dropout_p), seed, offset, True)
    return out, mask


def attention(q, k, v, *, softmax_scale, attention_mask=None, dropout_p=0.0, causal=False, dropout_seed=(0, 0)):
    """`semvlp.ops.attention` without attention_mask, as varlen attention over `batch` equal segments.

    The dropout counters are then those the contract gives padded batches (segment = batch index).
    """
    batch, seqlen_q, nheads, head_dim = q.shape
    seqlen_k = k.shape[1]
    steps = torch.arange(batch + 1, dtype=torch.int32, device=q.device)
    out = varlen_attention(q.reshape(batch * seqlen_q, nheads, head_dim), k.reshape(batch * seqlen_k, nheads, head_dim),
                           v.reshape(batch * seqlen_k, nheads, head_dim), steps * seqlen_q, steps * seqlen_k, seqlen_q,
                           seqlen_k, dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal,
                           dropout_seed=dropout_seed)
    return out.view(batch, seqlen_q, nheads, head_dim)
