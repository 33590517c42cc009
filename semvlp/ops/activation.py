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
    state = dispatch.settings()
    try:
        key = None if state is None else ("bias_gelu", backend, state, x.dtype, x.device, x.shape, x.requires_grad,
                                          bias.dtype, bias.device, bias.shape, bias.requires_grad, approximate)
    except AttributeError:  # an argument that is not a tensor: the checks say which
        key = None
    found = dispatch.lookup(key)
    if found is None:
        check_tensor("x", x, dtypes=FLOAT_DTYPES)
        check_bias("bias", bias, x)
        if approximate not in APPROXIMATIONS:
            raise ValueError(f"approximate: expected one of {APPROXIMATIONS}, got {approximate!r}")
        found = dispatch.resolve(key, "bias_gelu", backend, dict(x=x, bias=bias, approximate=approximate))
    return found[1](x=x, bias=bias, approximate=approximate)
