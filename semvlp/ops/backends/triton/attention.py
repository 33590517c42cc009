"""Triton attention as registered custom ops (`semvlp::triton_attention_fwd/_bwd`) with fake twins, and the
autograd.Function the `triton` backend calls. Imported lazily: importing it imports triton.

One op pair serves both layouts: 4-d padded q/k/v with an optional key mask, 3-d packed q/k/v with
`cu_seqlens`. Dropout's (seed, offset) is drawn once per call by the public op (semvlp.ops.rng) and saved, so
the backward regenerates the forward's mask. The backward is deterministic (no atomics) while
`torch.are_deterministic_algorithms_enabled()`, and wherever the keys exceed ATOMIC_DQ_MAX_KEYS.
"""

from typing import Optional

import torch
from torch import Tensor

from semvlp.kernels import attention as kernel

# dQ through fp32 atomics only where a segment's keys fit one key block: on an H100 (bf16, 12 heads x 64)
# the two-pass, atomic-free backward was as fast at 140 keys (0.68 vs 0.69 ms), faster for 20x36
# cross-attention (0.47 vs 0.86 ms) and 4.5x faster at 4k keys (1.9 vs 8.7 ms); atomics won only with 20
# keys (0.65 vs 0.79 ms). bench/results/attention_nvidia-h100-80gb-hbm3_20261126T204554Z.json
ATOMIC_DQ_MAX_KEYS = 32


def _n_segments(q: Tensor, cu_seqlens_q: Optional[Tensor]) -> int:
    return q.shape[0] if q.dim() == 4 else cu_seqlens_q.shape[0] - 1


def _seqlen_q(q: Tensor, max_seqlen_q: int) -> int:
    return q.shape[1] if q.dim() == 4 else max_seqlen_q


@torch.library.custom_op("semvlp::triton_attention_fwd", mutates_args=())
def attention_fwd(q: Tensor, k: Tensor, v: Tensor, key_mask: Optional[Tensor], cu_seqlens_q: Optional[Tensor],
                  cu_seqlens_k: Optional[Tensor], max_seqlen_q: int, max_seqlen_k: int, softmax_scale: float,
                  causal: bool, dropout_p: float, seed: int, offset: int) -> tuple[Tensor, Tensor]:
    """Returns (out like q, log-sum-exp float32 (n_segments, nheads, seqlen_q))."""
    return kernel.attention_forward(q, k, v, key_mask=key_mask, cu_seqlens_q=cu_seqlens_q,
                                    cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
                                    softmax_scale=softmax_scale, causal=causal, dropout_p=dropout_p, seed=seed,
                                    offset=offset)


@attention_fwd.register_fake
def _(q, k, v, key_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, dropout_p,
      seed, offset):
    lse_shape = (_n_segments(q, cu_seqlens_q), q.shape[-2], _seqlen_q(q, max_seqlen_q))
    return q.new_empty(q.shape), q.new_empty(lse_shape, dtype=torch.float32)


@torch.library.custom_op("semvlp::triton_attention_bwd", mutates_args=())
def attention_bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                  key_mask: Optional[Tensor], cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
                  max_seqlen_q: int, max_seqlen_k: int, softmax_scale: float, causal: bool, dropout_p: float,
                  seed: int, offset: int, deterministic: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (dq, dk, dv) like q, k, v."""
    return kernel.attention_backward(dout, q, k, v, out, lse, key_mask=key_mask, cu_seqlens_q=cu_seqlens_q,
                                     cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
                                     softmax_scale=softmax_scale, causal=causal, dropout_p=dropout_p, seed=seed,
                                     offset=offset, deterministic=deterministic)


@attention_bwd.register_fake
def _(dout, q, k, v, out, lse, key_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
      causal, dropout_p, seed, offset, deterministic):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


class TritonAttention(torch.autograd.Function):
    """Differentiable in q, k, v; the mask, offsets and options are constants."""

    @staticmethod
    def forward(ctx, q, k, v, key_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                causal, dropout_p, seed, offset):
        if cu_seqlens_k is None:  # self-attention: see varlen_attention
            cu_seqlens_k = cu_seqlens_q
        out, lse = torch.ops.semvlp.triton_attention_fwd(q, k, v, key_mask, cu_seqlens_q, cu_seqlens_k,
                                                         max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                                                         dropout_p, seed, offset)
        if any(ctx.needs_input_grad[:3]):
            ctx.save_for_backward(q, k, v, out, lse, key_mask, cu_seqlens_q, cu_seqlens_k)
            ctx.options = (max_seqlen_q, max_seqlen_k, softmax_scale, causal, dropout_p, seed, offset)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, key_mask, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
        max_seqlen_k = ctx.options[1]
        two_pass = torch.are_deterministic_algorithms_enabled() or max_seqlen_k > ATOMIC_DQ_MAX_KEYS
        dq, dk, dv = torch.ops.semvlp.triton_attention_bwd(
            dout, q, k, v, out, lse, key_mask, cu_seqlens_q, cu_seqlens_k, *ctx.options, two_pass)
        return dq, dk, dv, None, None, None, None, None, None, None, None, None, None


def attention(q, k, v, *, softmax_scale, attention_mask=None, dropout_p=0.0, causal=False, dropout_seed=(0, 0)):
    """`semvlp.ops.attention` on the Triton kernels (inputs checked; the mask is bool or None; the scale and, with
    dropout, the (seed, offset) pair resolved by the public op)."""
    return TritonAttention.apply(q, k, v, attention_mask, None, None, q.shape[1], k.shape[1], softmax_scale, causal,
                                 dropout_p, *dropout_seed)


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, softmax_scale,
                     dropout_p=0.0, causal=False, dropout_seed=(0, 0)):
    """`semvlp.ops.varlen_attention` on the Triton kernels (inputs checked and resolved as in `attention`)."""
    # One offsets tensor for both sides goes in once: torch.compile cannot trace an autograd.Function given the
    # same tensor twice.
    if cu_seqlens_k is cu_seqlens_q:
        cu_seqlens_k = None
    return TritonAttention.apply(q, k, v, None, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                                 causal, dropout_p, *dropout_seed)


def attention_keep_mask(seed: int, offset: int, dropout_p: float, n_segments: int, nheads: int, max_seqlen_q: int,
                        max_seqlen_k: int, device) -> Tensor:
    """The keep mask the kernels draw for (seed, offset), from the kernels' own code (for tests and debugging):
    `semvlp.ops.rng.attention_keep_mask` computed on `device`."""
    return kernel.dropout_keep_mask(seed, offset, dropout_p, n_segments, nheads, max_seqlen_q, max_seqlen_k, device)
