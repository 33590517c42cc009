"""Public activation ops."""

from __future__ import annotations

import torch

from . import dispatch
from .checks import check_bias, check_tensor, FLOAT_DTYPES

APPROXIMATIONS = ("none", "tanh")


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, approximate: str = "none", *, backend: str = "auto") -> torch.Tensor:
    """gelu(x + bias), the feed-forward activation.

    Args:
        x: (..., features), float32/float16/bfloat16 (a matmul output without its bias).
        bias: (features,).
        approximate: "none" (erf form, BERT's "gelu") or "tanh" (BERT's "gelu_new").
        backend: as in `semvlp.ops.attention`.

    Returns:
        Like x.
    """
    if dispatch.is_compiling():  # traced: checked and chosen as in eager, nothing cached
        key = found = None
    else:
        try:
            grad = dispatch.is_grad_enabled()
            key = ("bias_gelu", backend, grad, dispatch.environment(), approximate, x.dtype, x.device, x.shape,
                   bias.dtype, bias.device, bias.shape, grad and (x.requires_grad or bias.requires_grad))
            found = dispatch.RESOLVED.get(key)
        except (AttributeError, TypeError):  # not a tensor, or unhashable: the checks say which
            key = found = None
    if found is None:
        check_tensor("x", x, dtypes=FLOAT_DTYPES)
        check_bias("bias", bias, x)
        if approximate not in APPROXIMATIONS:
            raise ValueError(f"approximate: expected one of {APPROXIMATIONS}, got {approximate!r}")
        found = dispatch.resolve(key, "bias_gelu", backend, dict(x=x, bias=bias, approximate=approximate))
    if found[3] is not None:  # specialized: (x, bias)
        return found[3](x, bias)
    return found[1](x=x, bias=bias, approximate=approximate)
