"""Public attention ops: padded batches with a key-padding mask, and packed (varlen) segments."""

from __future__ import annotations

import math

import torch

from . import dispatch
from .checks import check_cu_seqlens, check_probability, check_qkv, normalize_attention_mask
from .rng import draw_seed_offset


def _checked_scale(softmax_scale, causal, head_dim: int) -> float:
    """The softmax scale every backend receives: the given one, or 1/sqrt(head_dim)."""
    if softmax_scale is not None and (not isinstance(softmax_scale, (int, float)) or softmax_scale <= 0):
        raise ValueError(f"softmax_scale: expected None or a positive float, got {softmax_scale!r}")
    if not isinstance(causal, bool):
        raise ValueError(f"causal: expected a bool, got {causal!r}")
    return float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(head_dim)


def _run(op: str, backend: str, inputs: dict) -> torch.Tensor:
    name, impl = dispatch.choose(op, backend, inputs)
    if inputs["dropout_p"] > 0.0 and dispatch.philox_dropout(name):
        inputs["dropout_seed"] = draw_seed_offset()
    return impl(**inputs)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
              backend: str = "auto") -> torch.Tensor:
    """Scaled dot-product attention over padded batches.

    Args:
        q: (batch, seqlen_q, nheads, headdim), float32/float16/bfloat16 (float64 on reference and sdpa).
        k, v: (batch, seqlen_k, nheads, headdim), same dtype and device as q; seqlen_k may differ from seqlen_q.
        attention_mask: optional (batch, seqlen_k), bool or integer 0/1; True/1 = real key, False/0 = padding
            (the Hugging Face convention). Query rows whose keys are all padding output zeros, never NaN, and
            receive zero gradients.
        dropout_p: dropout probability on the attention probabilities, applied as given (pass 0.0 in eval).
        softmax_scale: scale of q·k; default 1/sqrt(headdim).
        causal: query i attends to key j only if j <= i + seqlen_k - seqlen_q (bottom-right aligned, as
            FlashAttention).
        backend: "auto" (the fastest backend that supports the inputs; SEMVLP_BACKEND overrides) or a name
            from `semvlp.backends()`.

    Returns:
        (batch, seqlen_q, nheads, headdim), dtype of q.
    """
    check_qkv(q, k, v, layout_ndim=4)
    mask = normalize_attention_mask(attention_mask, q.shape[0], k.shape[1], q.device)
    check_probability("dropout_p", dropout_p)
    scale = _checked_scale(softmax_scale, causal, q.shape[-1])
    inputs = dict(q=q, k=k, v=v, attention_mask=mask, dropout_p=float(dropout_p), softmax_scale=scale, causal=causal)
    return _run("attention", backend, inputs)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                     cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, *, dropout_p: float = 0.0,
                     softmax_scale: float | None = None, causal: bool = False, backend: str = "auto",
                     check_offsets: bool = True) -> torch.Tensor:
    """Attention over packed (unpadded) segments, with FlashAttention's varlen semantics.

    Query segment i (rows cu_seqlens_q[i]:cu_seqlens_q[i+1]) attends to key segment i only. Segments may be
    empty; a query segment whose key segment is empty outputs zeros with zero gradients.

    Args:
        q: (total_q, nheads, headdim); k, v: (total_k, nheads, headdim); dtypes as in `attention`.
        cu_seqlens_q, cu_seqlens_k: int32 (n_segments + 1,) offsets on the device of q: start at 0, never
            decrease, end at total_q / total_k; both hold the same number of segments.
        max_seqlen_q, max_seqlen_k: int upper bounds on the segment lengths (used to size the work).
        dropout_p, softmax_scale, causal, backend: as in `attention` (causal is bottom-right aligned per
            segment).
        check_offsets: False skips the checks on the offsets' values (one host-device sync); pass False only
            for offsets validated already, as `semvlp.data.PackedLayout` does.

    Returns:
        (total_q, nheads, headdim), dtype of q.
    """
    check_qkv(q, k, v, layout_ndim=3)
    if check_offsets:
        check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q, "max_seqlen_q", q.device)
        check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k, "max_seqlen_k", q.device)
        if cu_seqlens_q.numel() != cu_seqlens_k.numel():
            raise ValueError(
                f"cu_seqlens_k: holds {cu_seqlens_k.numel() - 1} segments, expected {cu_seqlens_q.numel() - 1} "
                "(those of cu_seqlens_q)")
    check_probability("dropout_p", dropout_p)
    scale = _checked_scale(softmax_scale, causal, q.shape[-1])
    inputs = dict(q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q,
                  max_seqlen_k=max_seqlen_k, dropout_p=float(dropout_p), softmax_scale=scale, causal=causal)
    return _run("varlen_attention", backend, inputs)
