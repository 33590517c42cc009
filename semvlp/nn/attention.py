"""Attention sub-blocks over packed tokens, each ending in the fused bias-dropout-residual-LayerNorm.

Both take hidden states of shape (total_tokens, hidden) and the varlen offsets that say which tokens attend
to which (see semvlp.data.PackedLayout); the offsets must be validated already (the layout does it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .layer_norm import LayerNorm


class _AttentionOutput(nn.Module):
    """Output projection + bias + dropout + residual + LayerNorm, fused where the backend allows."""

    def __init__(self, hidden_size: int, dropout: float, eps: float, backend: str):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = LayerNorm(hidden_size, eps=eps)
        self.dropout = dropout
        self.backend = backend

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        projected = F.linear(context, self.dense.weight)
        return ops.add_layer_norm(projected, residual, self.norm.weight, self.norm.bias, x_bias=self.dense.bias,
                                  dropout_p=self.dropout if self.training else 0.0, eps=self.norm.eps,
                                  backend=self.backend)


class PackedSelfAttention(nn.Module):
    """Post-LN multi-head self-attention with a fused QKV projection over packed segments."""

    def __init__(self, hidden_size: int, num_heads: int, *, attention_dropout: float = 0.0,
                 hidden_dropout: float = 0.0, eps: float = 1e-12, backend: str = "auto"):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size: {hidden_size} is not divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.attention_dropout = attention_dropout
        self.backend = backend
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.output = _AttentionOutput(hidden_size, hidden_dropout, eps, backend)

    def forward(self, hidden: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        """hidden (total, hidden); token i attends to the tokens of its own segment of `cu_seqlens`."""
        q, k, v = self.qkv(hidden).view(-1, 3, self.num_heads, self.head_dim).unbind(dim=1)
        context = ops.varlen_attention(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                       dropout_p=self.attention_dropout if self.training else 0.0,
                                       backend=self.backend, check_offsets=False)
        return self.output(context.reshape(hidden.shape), hidden)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, attention_dropout={self.attention_dropout}"


class PackedCrossAttention(nn.Module):
    """Post-LN multi-head cross-attention: every token queries the keys gathered for its segment.

    One module serves both directions (text -> regions and regions -> text): keys and values are projected
    from the same packed tensor and gathered with `kv_index` into the order of `cu_seqlens_k`.
    """

    def __init__(self, hidden_size: int, num_heads: int, *, attention_dropout: float = 0.0,
                 hidden_dropout: float = 0.0, eps: float = 1e-12, backend: str = "auto"):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size: {hidden_size} is not divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.attention_dropout = attention_dropout
        self.backend = backend
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key_value = nn.Linear(hidden_size, 2 * hidden_size)
        self.output = _AttentionOutput(hidden_size, hidden_dropout, eps, backend)

    def forward(self, hidden: torch.Tensor, kv_index: torch.Tensor, cu_seqlens_q: torch.Tensor,
                cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int) -> torch.Tensor:
        q = self.query(hidden).view(-1, self.num_heads, self.head_dim)
        kv = self.key_value(hidden).index_select(0, kv_index)
        k, v = kv.view(-1, 2, self.num_heads, self.head_dim).unbind(dim=1)
        context = ops.varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                       dropout_p=self.attention_dropout if self.training else 0.0,
                                       backend=self.backend, check_offsets=False)
        return self.output(context.reshape(hidden.shape), hidden)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, attention_dropout={self.attention_dropout}"
