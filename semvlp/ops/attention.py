"""Public attention ops: padded batches with a key-padding mask, and packed (varlen) segments."""

from __future__ import annotations

import math

import torch

from . import dispatch
from .checks import (check_cu_seqlens, check_probability, check_qkv, integer_mask_as_bool,
                     normalize_attention_mask)
from .rng import draw_seed_offset


def _checked_scale(softmax_scale, causal, head_dim: int) -> float:
    """The softmax scale every backend receives: the given one, or 1/sqrt(head_dim)."""
    if softmax_scale is not None and (isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float))
                                      or not 0 < softmax_scale < math.inf):
        raise ValueError(f"softmax_scale: expected None or a finite positive float, got {softmax_scale!r}")
    if not isinstance(causal, bool):
        raise ValueError(f"causal: expected a bool, got {causal!r}")
    return float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(head_dim)


def _run(found: tuple, inputs: dict) -> torch.Tensor:
    if inputs["dropout_p"] > 0.0 and found[2]:
        inputs["dropout_seed"] = draw_seed_offset()
    return found[1](**inputs)


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
    if dispatch.is_compiling():  # traced: checked and chosen as in eager, nothing cached
        key = found = None
    else:
        try:
            grad = dispatch.is_grad_enabled()
            key = ("attention", backend, grad, dispatch.environment(), dropout_p, softmax_scale, causal, q.dtype,
                   q.device, q.shape, k.dtype, k.device, k.shape, v.dtype, v.device, v.shape,
                   None if attention_mask is None else (attention_mask.dtype, attention_mask.device,
                                                        attention_mask.shape),
                   grad and (q.requires_grad or k.requires_grad or v.requires_grad))
            found = dispatch.RESOLVED.get(key)
        except (AttributeError, TypeError):  # not a tensor, or unhashable: the checks say which
            key = found = None
    if found is None:
        check_qkv(q, k, v, layout_ndim=4)
        mask = normalize_attention_mask(attention_mask, q.shape[0], k.shape[1], q.device)
        check_probability("dropout_p", dropout_p)
        scale = _checked_scale(softmax_scale, causal, q.shape[-1])
        inputs = dict(q=q, k=k, v=v, attention_mask=mask, dropout_p=float(dropout_p), softmax_scale=scale,
                      causal=causal)
        found = dispatch.resolve(key, "attention", backend, inputs)
        return _run(found, inputs) if found[3] is None else found[3](q, k, v, mask)
    mask = attention_mask
    if mask is not None and mask.dtype != torch.bool:
        mask = integer_mask_as_bool(mask)
    if found[3] is not None:  # specialized: (q, k, v, the mask as bool or None)
        return found[3](q, k, v, mask)
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return _run(found, dict(q=q, k=k, v=v, attention_mask=mask, dropout_p=float(dropout_p), softmax_scale=scale,
                            causal=causal))


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
    if dispatch.is_compiling():  # traced: checked and chosen as in eager, nothing cached
        key = found = None
    else:
        try:
            # The offsets' values are checked on every call (check_offsets) and the backends' rules read none.
            grad = dispatch.is_grad_enabled()
            key = ("varlen_attention", backend, grad, dispatch.environment(), max_seqlen_q, max_seqlen_k, dropout_p,
                   softmax_scale, causal, q.dtype, q.device, q.shape, k.dtype, k.device, k.shape, v.dtype, v.device,
                   v.shape, grad and (q.requires_grad or k.requires_grad or v.requires_grad))
            found = dispatch.RESOLVED.get(key)
        except (AttributeError, TypeError):  # not a tensor, or unhashable: the checks say which
            key = found = None
    if found is None:
        check_qkv(q, k, v, layout_ndim=3)
    if check_offsets:  # reads the offsets' values, so on every call
        check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q, "max_seqlen_q", q.device)
        check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k, "max_seqlen_k", q.device)
        if cu_seqlens_q.numel() != cu_seqlens_k.numel():
            raise ValueError(
                f"cu_seqlens_k: holds {cu_seqlens_k.numel() - 1} segments, expected {cu_seqlens_q.numel() - 1} "
                "(those of cu_seqlens_q)")
    if found is None:
        check_probability("dropout_p", dropout_p)
        _checked_scale(softmax_scale, causal, q.shape[-1])
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    inputs = dict(q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q,
                  max_seqlen_k=max_seqlen_k, dropout_p=float(dropout_p), softmax_scale=scale, causal=causal)
    return _run(found or dispatch.resolve(key, "varlen_attention", backend, inputs), inputs)
