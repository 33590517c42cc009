"""The `reference` backend: pure-PyTorch reference of every op, the oracle the kernels are tested against and
the path that runs everything, everywhere (priority 0).

Each function computes in float32 or wider when `upcast=True` (the default: 16-bit inputs in float32, float64
inputs in float64) and returns the input dtype. Dropout
can be given as an explicit keep-mask (`dropout_mask`, True = kept) so a kernel's own mask can be
replayed here; otherwise it is drawn from torch's default generator.
Inputs are assumed valid: the public ops in `semvlp.ops` check them first.
"""

from __future__ import annotations

import math

import torch

from ..dispatch import Backend, register_backend
from .padding import pad_varlen, padded_allowed


def _wide(t: torch.Tensor | None) -> torch.Tensor | None:
    """t in float32, or float64 when it is float64 (the oracle never computes below its inputs' precision)."""
    return t if t is None or t.dtype == torch.float64 else t.float()


def _keep_mask(shape, dropout_p: float, device) -> torch.Tensor:
    return torch.rand(shape, device=device) >= dropout_p


def _apply_dropout(x: torch.Tensor, dropout_p: float, dropout_mask: torch.Tensor | None) -> torch.Tensor:
    if dropout_mask is None and dropout_p == 0.0:
        return x
    if dropout_mask is None:
        dropout_mask = _keep_mask(x.shape, dropout_p, x.device)
    return x * dropout_mask.to(x.dtype) / (1.0 - dropout_p)


def masked_attention(q, k, v, allowed, *, dropout_p=0.0, softmax_scale=None, dropout_mask=None, upcast=True):
    """Attention over (batch, seqlen, nheads, headdim) with a boolean `allowed` mask.

    `allowed` broadcasts to (batch, nheads, seqlen_q, seqlen_k); True = the query may attend to the key.
    Rows with no allowed key output zeros and pass zero gradients.
    """
    dtype = q.dtype
    if upcast:
        q, k, v = _wide(q), _wide(k), _wide(v)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    # A finite fill keeps fully masked rows NaN-free in both passes; their probabilities are zeroed below.
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    probs = probs * allowed.any(dim=-1, keepdim=True).to(probs.dtype)
    probs = _apply_dropout(probs, dropout_p, dropout_mask)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v)
    return out.to(dtype)


def attention(q, k, v, *, attention_mask=None, dropout_p=0.0, softmax_scale=None, causal=False,
              dropout_mask=None, upcast=True):
    """Reference of `semvlp.ops.attention`; `attention_mask` is a bool (batch, seqlen_k), True = real key.

    `dropout_mask`: bool (batch, nheads, seqlen_q, seqlen_k), True = kept.
    """
    allowed = padded_allowed(attention_mask, q.shape[0], q.shape[1], k.shape[1], causal, q.device)
    return masked_attention(q, k, v, allowed, dropout_p=dropout_p, softmax_scale=softmax_scale,
                            dropout_mask=dropout_mask, upcast=upcast)


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, dropout_p=0.0,
                     softmax_scale=None, causal=False, dropout_mask=None, upcast=True):
    """Reference of `semvlp.ops.varlen_attention`: pads each segment, attends, packs back.

    `dropout_mask`: bool (n_segments, nheads, max_seqlen_q, max_seqlen_k), True = kept.
    """
    q_pad, k_pad, v_pad, allowed, q_valid = pad_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal)
    out = masked_attention(q_pad, k_pad, v_pad, allowed, dropout_p=dropout_p, softmax_scale=softmax_scale,
                           dropout_mask=dropout_mask, upcast=upcast)
    return out[q_valid]


def add_layer_norm(x, residual, weight, bias, *, x_bias=None, dropout_p=0.0, eps=1e-12, prenorm=False,
                   dropout_mask=None, upcast=True):
    """LayerNorm(residual + dropout(x + x_bias)); with `prenorm=True` also returns that sum.

    `dropout_mask`: bool like x, True = kept.
    """
    dtype = torch.promote_types(x.dtype, residual.dtype)
    if upcast:
        x, residual, x_bias = _wide(x), _wide(residual), _wide(x_bias)
    h = x if x_bias is None else x + x_bias
    total = residual + _apply_dropout(h, dropout_p, dropout_mask)
    out = layer_norm(total, weight, bias, eps=eps, upcast=upcast).to(dtype)
    return (out, total.to(dtype)) if prenorm else out


def layer_norm(x, weight, bias, *, eps=1e-12, upcast=True):
    """LayerNorm over the last dim with optional affine weight/bias."""
    dtype = x.dtype
    if upcast:
        x, weight, bias = _wide(x), _wide(weight), _wide(bias)
    mean = x.mean(dim=-1, keepdim=True)
    centered = x - mean
    var = (centered * centered).mean(dim=-1, keepdim=True)
    y = centered * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.to(dtype)


def bias_gelu(x, bias, *, approximate="none", upcast=True):
    """gelu(x + bias) in the erf ("none") or tanh form."""
    dtype = x.dtype
    if upcast:
        x, bias = _wide(x), _wide(bias)
    h = x + bias
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (h + 0.044715 * h * h * h)
        return (0.5 * h * (1.0 + torch.tanh(inner))).to(dtype)
    return (0.5 * h * (1.0 + torch.erf(h * (1.0 / math.sqrt(2.0))))).to(dtype)


def _always(**_inputs) -> list[str]:
    return []


register_backend(Backend(
    name="reference",
    priority=0,
    unavailable=lambda: None,
    ops={
        "attention": (_always, attention),
        "varlen_attention": (_always, varlen_attention),
        "layer_norm": (_always, layer_norm),
        "add_layer_norm": (_always, add_layer_norm),
        "bias_gelu": (_always, bias_gelu),
    },
))
