"""The `torch` backend: LayerNorm, add-LayerNorm and bias-GELU through PyTorch's own fused kernels.

`torch.nn.functional.layer_norm` and `gelu` are single kernels forward and backward, where the reference
spells both out in elementwise ops (a pass over memory and an autograd node each, in float32); on the CPU
this is the difference that matters for a whole training step (bench/NOTES.md has the measurement).
Preferred over `reference`, below the Triton and CUDA kernels. Half-precision inputs: layer_norm
accumulates its statistics in float32 inside the kernel; the residual sum is taken in the input dtype, as
PyTorch modules do. Dropout draws from torch's generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..dispatch import Backend, register_backend


def _like(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    # Comparing dtypes first spares a call of `.to`, which costs about what a small op does.
    return t if t is None or t.dtype == x.dtype else t.to(x.dtype)


def layer_norm(x, weight, bias, eps=1e-12):
    # What F.layer_norm calls after its Python-level checks; the last argument (cudnn_enable) is unused by ATen.
    return torch.layer_norm(x, x.shape[-1:], _like(weight, x), _like(bias, x), eps, True)


def add_layer_norm(x, residual, weight, bias, *, x_bias=None, dropout_p=0.0, eps=1e-12, prenorm=False):
    h = x if x_bias is None else x + _like(x_bias, x)
    if dropout_p > 0.0:
        h = F.dropout(h, dropout_p, training=True)
    total = residual + h
    out = layer_norm(total, weight, bias, eps)
    return (out, total) if prenorm else out


def bias_gelu(x, bias, *, approximate="none"):
    return F.gelu(x + _like(bias, x), approximate=approximate)


# Per signature (see dispatch.Backend.specialized): the dtype comparisons and the normalised shape are settled
# once, so a call is the PyTorch op and nothing else.

def _casts(dtype: torch.dtype, *params) -> bool:
    return any(t is not None and t.dtype != dtype for t in params)


def _layer_norm_for(x, weight, bias, eps):
    if _casts(x.dtype, weight, bias):
        return None
    shape = x.shape[-1:]
    return lambda x, weight, bias: torch.layer_norm(x, shape, weight, bias, eps, True)


def _add_layer_norm_for(x, residual, weight, bias, *, x_bias, dropout_p, eps, prenorm):
    if prenorm or x_bias is None or _casts(x.dtype, x_bias) or _casts(torch.promote_types(residual.dtype, x.dtype),
                                                                        weight, bias):
        return None
    shape = x.shape[-1:]
    if dropout_p > 0.0:
        return lambda x, residual, weight, bias, x_bias: torch.layer_norm(
            residual + F.dropout(x + x_bias, dropout_p, training=True), shape, weight, bias, eps, True)
    return lambda x, residual, weight, bias, x_bias: torch.layer_norm(residual + (x + x_bias), shape, weight, bias,
                                                                      eps, True)


def _bias_gelu_for(x, bias, *, approximate):
    if _casts(x.dtype, bias):
        return None
    return lambda x, bias: F.gelu(x + bias, approximate=approximate)


def _always(**_inputs) -> list[str]:
    return []


register_backend(Backend(
    name="torch",
    priority=5,
    unavailable=lambda: None,
    ops={
        "layer_norm": (_always, layer_norm),
        "add_layer_norm": (_always, add_layer_norm),
        "bias_gelu": (_always, bias_gelu),
    },
    specialized={"layer_norm": _layer_norm_for, "add_layer_norm": _add_layer_norm_for, "bias_gelu": _bias_gelu_for},
))
