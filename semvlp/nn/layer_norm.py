"""LayerNorm with the constructor, parameters and state_dict of torch.nn.LayerNorm, backed by semvlp.ops."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from .. import ops


class LayerNorm(nn.Module):
    """Drop-in torch.nn.LayerNorm; statistics in float32 for every dtype."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None, *, backend: str = "auto"):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(self.normalized_shape, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if weight is not None and len(self.normalized_shape) == 1:
            # One normalised dim, the op's own layout: the op checks x's last dim against the weight (once per
            # signature); only a failed call compares it with normalized_shape, for the message below.
            try:
                return ops.layer_norm(x, weight, self.bias, self.eps, backend=self.backend)
            except ValueError:
                self._check_trailing_dims(x)
                raise
        self._check_trailing_dims(x)
        n = len(self.normalized_shape)
        if n == 1:
            return ops.layer_norm(x, weight, self.bias, self.eps, backend=self.backend)
        # The ops normalise over the last dim; several normalised dims are flattened into one.
        flat = x.reshape(*x.shape[:x.dim() - n], math.prod(self.normalized_shape))
        weight = None if weight is None else weight.reshape(-1)
        bias = None if self.bias is None else self.bias.reshape(-1)
        return ops.layer_norm(flat, weight, bias, self.eps, backend=self.backend).view_as(x)

    def _check_trailing_dims(self, x) -> None:
        n = len(self.normalized_shape)
        if isinstance(x, torch.Tensor) and tuple(x.shape[x.dim() - n:]) != self.normalized_shape:
            raise ValueError(f"x: expected trailing dims {self.normalized_shape}, got shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")
