"""The `sdpa` backend: attention through torch.nn.functional.scaled_dot_product_attention.

Preferred over `reference` for attention because PyTorch's fused CPU and GPU kernels avoid the fp32
copies and the materialised probability tensor of the reference. Key padding and bottom-right causal
alignment go in as a boolean mask. Query rows with no key are given every key (SDPA would return NaN) and
their output is multiplied by zero, which also zeroes their gradients.

On the CPU, half-precision inputs that need gradients are attended in float32 and the output cast back:
PyTorch's CPU kernel is several times slower backward in bf16 than in float32 (bench/NOTES.md), while its bf16
forward is the faster one for long sequences, so inference stays in the input dtype.

Packed (varlen) segments are padded by their tokens' (segment, position) coordinates (`padding.pad_varlen`), with
no data-dependent shape, so a compiled model holds the whole attention in one graph; a layout whose max lengths
exceed its segments' (a token-budget batch's static maxima) only pads more.

PyTorch's CPU kernels (since 2.5) already give a row with no key a zero output and zero gradients; where a probe
at import shows that for a dtype, the CPU path hands SDPA the mask as it is and skips the fix-up above (four
small ops: their host cost is most of a small attention call's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dispatch import Backend, records_grad, register_backend
from .padding import pad_varlen, padded_allowed

HALF = (torch.float16, torch.bfloat16)


def _probe_zeroes_rows_without_keys(dtype: torch.dtype, dropout_p: float) -> bool:
    """Whether SDPA on the CPU, in this dtype, gives a query row whose keys are all masked a zero output and
    zero, finite gradients (checked forward and backward on one such row)."""
    with torch.inference_mode(False), torch.enable_grad():
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 1, 3, 8, generator=gen).to(dtype).requires_grad_() for _ in range(3))
        allowed = torch.tensor([[True, True, False], [False, False, False]])[:, None, None, :]
        try:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
            out.backward(torch.ones_like(out))
        except RuntimeError:
            return False
        grads = [t.grad for t in (q, k, v)]
        return (bool(torch.isfinite(out).all()) and bool((out[1] == 0).all())
                and all(bool(torch.isfinite(g).all()) and bool((g[1] == 0).all()) for g in grads))


# (dtype, dropout > 0) -> whether the CPU kernels zero the rows without keys (dropout may pick another kernel)
CPU_ZEROES_ROWS_WITHOUT_KEYS = {(dtype, dropout): _probe_zeroes_rows_without_keys(dtype, 0.5 if dropout else 0.0)
                                for dtype in (torch.float32, torch.float64, *HALF) for dropout in (False, True)}


def _sdpa(q, k, v, allowed, dropout_p, softmax_scale):
    """q/k/v (batch, seqlen, nheads, headdim); `allowed` bool broadcastable to (batch, 1, seqlen_q, seqlen_k), or
    None."""
    dtype = q.dtype
    upcast = dtype in HALF and q.device.type == "cpu" and records_grad(q, k, v)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    if allowed is None:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=softmax_scale)
        if q.device.type == "cpu":
            # PyTorch's unmasked CPU kernel gives a query row holding a NaN a zero output; NaN must propagate.
            out = out + q.sum(-1, keepdim=True) * 0
    elif q.device.type == "cpu" and CPU_ZEROES_ROWS_WITHOUT_KEYS.get((q.dtype, dropout_p > 0.0), False):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=softmax_scale)
    else:
        has_key = allowed.any(dim=-1, keepdim=True)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~has_key, dropout_p=dropout_p,
                                             scale=softmax_scale)
        out = out * has_key.to(out.dtype)
    return (out.to(dtype) if upcast else out).transpose(1, 2)


def attention(q, k, v, *, attention_mask=None, dropout_p=0.0, softmax_scale=None, causal=False):
    if attention_mask is None and not causal:
        return _sdpa(q, k, v, None, dropout_p, softmax_scale)
    if not causal and q.device.type == "cpu":  # the key-padding mask broadcasts over heads and queries as it is
        batch, seqlen_k = attention_mask.shape
        return _sdpa(q, k, v, attention_mask.view(batch, 1, 1, seqlen_k), dropout_p, softmax_scale)
    allowed = padded_allowed(attention_mask, q.shape[0], q.shape[1], k.shape[1], causal, q.device)
    return _sdpa(q, k, v, allowed, dropout_p, softmax_scale)


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, dropout_p=0.0,
                     softmax_scale=None, causal=False):
    q_pad, k_pad, v_pad, allowed, q_index = pad_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal)
    return _sdpa(q_pad, k_pad, v_pad, allowed, dropout_p, softmax_scale)[q_index]


def _attention_for(q, k, v, *, attention_mask, dropout_p, softmax_scale, causal):
    """For one signature: a CPU call with a key mask, in a dtype whose kernels zero rows without keys and with no
    upcast, is SDPA on views and nothing else (see dispatch.Backend.specialized)."""
    if (causal or attention_mask is None or q.device.type != "cpu" or (q.dtype in HALF and records_grad(q, k, v))
            or not CPU_ZEROES_ROWS_WITHOUT_KEYS.get((q.dtype, dropout_p > 0.0), False)):
        return None
    shape = (attention_mask.shape[0], 1, 1, attention_mask.shape[1])
    sdpa = F.scaled_dot_product_attention
    return lambda q, k, v, mask: sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                      attn_mask=mask.view(shape), dropout_p=dropout_p,
                                      scale=softmax_scale).transpose(1, 2)


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
    specialized={"attention": _attention_for},
))
