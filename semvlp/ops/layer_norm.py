"""Public LayerNorm ops: plain, and fused with bias, dropout and the residual add."""

from __future__ import annotations

import math

import torch

from . import dispatch
from .checks import check_bias, check_like, check_normalized_shape, check_probability
from .rng import draw_seed_offset


def _check_eps(eps) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise ValueError(f"eps: expected a finite positive float, got {eps!r}")


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-12, *,
               backend: str = "auto") -> torch.Tensor:
    """LayerNorm over the last dim of x.

    Args:
        x: (..., hidden), float32/float16/bfloat16. Statistics are computed in float32 for every dtype.
        weight, bias: optional (hidden,) affine parameters (any float dtype; e.g. float32 under autocast).
        eps: added to the variance.
        backend: as in `semvlp.ops.attention`.

    Returns:
        Like x.
    """
    if dispatch.is_compiling():  # traced: checked and chosen as in eager, nothing cached
        key = found = None
    else:
        try:
            grad = dispatch.is_grad_enabled()
            key = ("layer_norm", backend, grad, dispatch.environment(), eps, x.dtype, x.device, x.shape,
                   None if weight is None else (weight.dtype, weight.device, weight.shape),
                   None if bias is None else (bias.dtype, bias.device, bias.shape),
                   grad and (x.requires_grad or weight is not None and weight.requires_grad
                             or bias is not None and bias.requires_grad))
            found = dispatch.RESOLVED.get(key)
        except (AttributeError, TypeError):  # not a tensor, or unhashable: the checks say which
            key = found = None
    if found is None:
        check_normalized_shape(x, weight, bias)
        _check_eps(eps)
        found = dispatch.resolve(key, "layer_norm", backend, dict(x=x, weight=weight, bias=bias, eps=float(eps)))
    if found[3] is not None:  # specialized: (x, weight, bias)
        return found[3](x, weight, bias)
    return found[1](x=x, weight=weight, bias=bias, eps=float(eps))


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   *, x_bias: torch.Tensor | None = None, dropout_p: float = 0.0, eps: float = 1e-12,
                   prenorm: bool = False, backend: str = "auto"):
    """out = LayerNorm(residual + dropout(x + x_bias)): the end of every post-LN sub-block.

    Args:
        x: (..., hidden), the sub-block's output before its bias (e.g. a matmul without bias).
        residual: same shape and device as x. Its float dtype may differ from x's (a float32 residual stream
            with bfloat16 matmul outputs under autocast): the sum and the output then take the promoted dtype,
            as `residual + x` would.
        weight, bias: optional (hidden,) LayerNorm affine parameters.
        x_bias: optional (hidden,) bias added to x before dropout (the sub-block's linear bias).
        dropout_p: dropout on (x + x_bias), applied as given (pass 0.0 in eval).
        eps: added to the variance; statistics in float32 for every dtype.
        prenorm: also return the pre-norm sum residual + dropout(x + x_bias) (for pre-LN stacks).
        backend: as in `semvlp.ops.attention`.

    Returns:
        out, or (out, prenorm_sum) when prenorm=True, shaped like x in the promoted dtype of x and residual.
    """
    if dispatch.is_compiling():  # traced: checked and chosen as in eager, nothing cached
        key = found = None
    else:
        try:
            grad = dispatch.is_grad_enabled()
            key = ("add_layer_norm", backend, grad, dispatch.environment(), dropout_p, eps, prenorm, x.dtype,
                   x.device, x.shape, residual.dtype, residual.device, residual.shape,
                   None if weight is None else (weight.dtype, weight.device, weight.shape),
                   None if bias is None else (bias.dtype, bias.device, bias.shape),
                   None if x_bias is None else (x_bias.dtype, x_bias.device, x_bias.shape),
                   grad and (x.requires_grad or residual.requires_grad or weight is not None and weight.requires_grad
                             or bias is not None and bias.requires_grad
                             or x_bias is not None and x_bias.requires_grad))
            found = dispatch.RESOLVED.get(key)
        except (AttributeError, TypeError):  # not a tensor, or unhashable: the checks say which
            key = found = None
    if found is None:
        check_normalized_shape(x, weight, bias)
        check_like("residual", residual, x, "x", same_dtype=False)
        if x_bias is not None:
            check_bias("x_bias", x_bias, x)
        check_probability("dropout_p", dropout_p)
        _check_eps(eps)
        if not isinstance(prenorm, bool):
            raise ValueError(f"prenorm: expected a bool, got {prenorm!r}")
        found = dispatch.resolve(key, "add_layer_norm", backend,
                                 dict(x=x, residual=residual, weight=weight, bias=bias, x_bias=x_bias,
                                      dropout_p=float(dropout_p), eps=float(eps), prenorm=prenorm))
    if found[3] is not None:  # specialized: (x, residual, weight, bias, x_bias)
        return found[3](x, residual, weight, bias, x_bias)
    if dropout_p > 0.0 and found[2]:
        return found[1](x=x, residual=residual, weight=weight, bias=bias, x_bias=x_bias, dropout_p=float(dropout_p),
                        eps=float(eps), prenorm=prenorm, dropout_seed=draw_seed_offset())
    return found[1](x=x, residual=residual, weight=weight, bias=bias, x_bias=x_bias, dropout_p=float(dropout_p),
                    eps=float(eps), prenorm=prenorm)
