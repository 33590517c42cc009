"""The post-LN feed-forward sub-block: matmul, fused bias-GELU, matmul, fused bias-dropout-residual-LayerNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .layer_norm import LayerNorm


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, *, approximate: str = "none",
                 dropout: float = 0.0, eps: float = 1e-12, backend: str = "auto"):
        super().__init__()
        self.intermediate = nn.Linear(hidden_size, intermediate_size)
        self.output = nn.Linear(intermediate_size, hidden_size)
        self.norm = LayerNorm(hidden_size, eps=eps)
        self.approximate = approximate
        self.dropout = dropout
        self.backend = backend

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., hidden_size) -> same shape."""
        inner = ops.bias_gelu(F.linear(hidden, self.intermediate.weight), self.intermediate.bias,
                              self.approximate, backend=self.backend)
        projected = F.linear(inner, self.output.weight)
        return ops.add_layer_norm(projected, hidden, self.norm.weight, self.norm.bias, x_bias=self.output.bias,
                                  dropout_p=self.dropout if self.training else 0.0, eps=self.norm.eps,
                                  backend=self.backend)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}, dropout={self.dropout}"
