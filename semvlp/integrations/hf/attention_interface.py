"""semvlp's attention in transformers' AttentionInterface: `attn_implementation="semvlp"`.

Two entries are registered under "semvlp": the attention function (transformers calls it from the attention
modules of every model written against the interface, BERT included) and a mask function. The mask function
hands the attention a 2D (batch, kv_length) bool key-padding mask, as transformers does for FlashAttention,
whenever the mask is plain bidirectional or plain causal attention over the whole key sequence; building it
reads no values, so nothing syncs the host and the model compiles and exports. Any other pattern (sliding
windows, packed sequences, overlays, static caches) gets transformers' 4D sdpa mask and runs transformers'
sdpa attention for that call; a call that asks for attention weights runs the eager computation.
"""

from __future__ import annotations

import logging

import torch

from ... import ops
from .fused import output_collector

logger = logging.getLogger(__name__)

NAME = "semvlp"
# Keyword arguments that change the attention's math in ways semvlp.ops.attention does not compute.
_UNSERVED = ("softcap", "s_aux", "sliding_window", "position_bias")


def semvlp_attention_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
                          mask_function=None, attention_mask: torch.Tensor | None = None, **kwargs):
    """transformers' mask-interface signature: a 2D bool key-padding mask (or None) when the pattern is plain,
    else transformers' sdpa mask."""
    from transformers.masking_utils import bidirectional_mask_function, causal_mask_function, sdpa_mask

    aligned = isinstance(q_offset, int) and isinstance(kv_offset, int) and kv_offset == 0 and (
        q_offset + q_length == kv_length)
    plain = mask_function is bidirectional_mask_function or (mask_function is causal_mask_function and aligned)
    if not plain or kwargs.get("local_size") is not None or (
            attention_mask is not None and attention_mask.dim() != 2):
        return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                         kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask, **kwargs)
    if attention_mask is None:
        return None
    return attention_mask[:, -kv_length:].bool()


def _eager_with_weights(module, query, key, value, mask, dropout: float, scaling: float):
    """Attention that returns its probabilities (for output_attentions), masks as key padding."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = torch.nn.functional.dropout(scores.softmax(dim=-1), p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def _weights_requested(kwargs: dict) -> bool:
    if kwargs.get("output_attentions"):
        return True
    collector = output_collector()
    collected = None if collector is None else collector.get()
    return collected is not None and "attentions" in collected


def semvlp_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                             is_causal: bool | None = None, **kwargs):
    """transformers' attention-function signature: q/k/v (batch, heads, seqlen, head_dim) in, returns
    ((batch, seqlen_q, heads, head_dim), attention weights or None). `dropout` is the probability transformers
    passes (0.0 outside training)."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    unserved = [name for name in _UNSERVED if kwargs.get(name) is not None]
    if (attention_mask is not None and attention_mask.dim() != 2) or unserved or value.shape[-1] != query.shape[-1]:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each key/value head serves several query heads
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    mask = attention_mask
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.bool()
    if _weights_requested(kwargs):
        return _eager_with_weights(module, query, key, value, mask, dropout, scaling)
    causal = bool(getattr(module, "is_causal", False) if is_causal is None else is_causal)
    out = ops.attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attention_mask=mask,
                        dropout_p=dropout, softmax_scale=scaling, causal=causal,
                        backend=getattr(module, "_semvlp_backend", "auto"))
    return out, None


def register_attention() -> bool:
    """Register "semvlp" in transformers' AttentionInterface and AttentionMaskInterface (idempotent). Returns
    False where transformers is not installed (importing semvlp.integrations.hf calls this, and must not fail
    for want of an optional package)."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError:
        return False

    AttentionInterface.register(NAME, semvlp_attention_forward)
    AttentionMaskInterface.register(NAME, semvlp_attention_mask)
    return True
