"""Triton add+LayerNorm as registered custom ops (`semvlp::triton_add_layer_norm_fwd/_bwd`) with fake twins,
and the autograd.Function behind the `triton` backend's `add_layer_norm` and `layer_norm`. Imported lazily.

Custom ops cannot return None, so absent optional results are empty tensors here and None again in the
autograd.Function. The backward reads the pre-norm sum s, which the forward writes whenever a gradient is
needed or `prenorm` asks for it (plain LayerNorm saves its input instead).
"""

from typing import Optional

import torch
from torch import Tensor

from semvlp.kernels import layer_norm as kernel



def _none_if_empty(t: Tensor) -> Optional[Tensor]:
    return None if t.dim() == 1 and t.shape[0] == 0 and t.dtype == torch.uint8 else t


def _empty_marker(like: Tensor) -> Tensor:
    """The stand-in for an absent result (uint8 (0,), never a real result's dtype)."""
    return like.new_empty((0,), dtype=torch.uint8)


@torch.library.custom_op("semvlp::triton_add_layer_norm_fwd", mutates_args=())
def add_layer_norm_fwd(x: Tensor, residual: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                       x_bias: Optional[Tensor], dropout_p: float, eps: float, seed: int, offset: int,
                       store_sum: bool) -> tuple[Tensor, Tensor]:
    """Returns (out like x, sum like x or an empty marker)."""
    out, total = kernel.add_layer_norm_forward(x, residual, weight, bias, x_bias, dropout_p=dropout_p, eps=eps,
                                               seed=seed, offset=offset, store_sum=store_sum)
    return out, _empty_marker(x) if total is None else total


@add_layer_norm_fwd.register_fake
def _(x, residual, weight, bias, x_bias, dropout_p, eps, seed, offset, store_sum):
    return x.new_empty(x.shape), x.new_empty(x.shape) if store_sum else _empty_marker(x)


@torch.library.custom_op("semvlp::triton_add_layer_norm_bwd", mutates_args=())
def add_layer_norm_bwd(dout: Tensor, dsum: Optional[Tensor], s: Tensor, weight: Optional[Tensor], eps: float,
                       dropout_p: float, seed: int, offset: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns (ds like s, dx like s or an empty marker (no dropout: dx = ds), dweight, dbias, dx_bias), the
    last three float32 (hidden,)."""
    ds, dx, dw, db, dxb = kernel.add_layer_norm_backward(dout, dsum, s, weight, eps=eps, dropout_p=dropout_p,
                                                         seed=seed, offset=offset)
    return ds, _empty_marker(s) if dx is None else dx, dw, db, dxb


@add_layer_norm_bwd.register_fake
def _(dout, dsum, s, weight, eps, dropout_p, seed, offset):
    sums = s.new_empty((s.shape[-1],), dtype=torch.float32)
    dx = s.new_empty(s.shape) if dropout_p > 0.0 else _empty_marker(s)
    return s.new_empty(s.shape), dx, sums, sums.new_empty(sums.shape), sums.new_empty(sums.shape)


class TritonAddLayerNorm(torch.autograd.Function):
    """out = LayerNorm(residual + dropout(x + x_bias)), and the sum too when `prenorm`; residual=None: plain
    LayerNorm."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, x_bias, dropout_p, eps, prenorm, seed, offset):
        needs_grad = any(ctx.needs_input_grad[:5])
        has_add = residual is not None
        out, total = torch.ops.semvlp.triton_add_layer_norm_fwd(
            x, residual, weight, bias, x_bias, dropout_p, eps, seed, offset, has_add and (prenorm or needs_grad))
        if needs_grad:
            ctx.save_for_backward(total if has_add else x, weight)
            ctx.options = (eps, dropout_p, seed, offset)
            ctx.has_add = has_add
            ctx.dtypes = tuple(None if t is None else t.dtype for t in (weight, bias, x_bias))
            # Unused outputs get None (not zeros) as their gradient, so no zeros are read in the backward.
            ctx.set_materialize_grads(False)
        return (out, total) if prenorm else out

    @staticmethod
    def backward(ctx, dout, dsum=None):
        s, weight = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(s)
        ds, dx, dw, db, dxb = torch.ops.semvlp.triton_add_layer_norm_bwd(
            dout, dsum, s, weight, *ctx.options)
        dx = _none_if_empty(dx)
        w_dtype, b_dtype, xb_dtype = ctx.dtypes
        if not ctx.has_add:
            return ds, None, _cast(dw, w_dtype), _cast(db, b_dtype), None, None, None, None, None, None
        return (ds if dx is None else dx, ds, _cast(dw, w_dtype), _cast(db, b_dtype), _cast(dxb, xb_dtype),
                None, None, None, None, None)


def _cast(grad: Tensor, dtype) -> Optional[Tensor]:
    return None if dtype is None else grad.to(dtype)


def add_layer_norm(x, residual, weight, bias, *, x_bias=None, dropout_p=0.0, eps=1e-12, prenorm=False,
                   dropout_seed=(0, 0)):
    """`semvlp.ops.add_layer_norm` on the Triton kernels (inputs checked; with dropout, the (seed, offset) pair
    drawn by the public op)."""
    return TritonAddLayerNorm.apply(x, residual, weight, bias, x_bias, dropout_p, eps, prenorm, *dropout_seed)


def layer_norm(x, weight, bias, eps=1e-12):
    """`semvlp.ops.layer_norm` on the Triton kernels (inputs checked)."""
    return TritonAddLayerNorm.apply(x, None, weight, bias, None, 0.0, eps, False, 0, 0)


def rowwise_keep_mask(seed: int, offset: int, dropout_p: float, rows: int, hidden: int, device) -> Tensor:
    """The keep mask the forward kernel draws for (seed, offset), from the kernel's own code (tests, debugging):
    `semvlp.ops.rng.rowwise_keep_mask` computed on `device`."""
    return kernel.dropout_keep_mask(seed, offset, dropout_p, rows, hidden, device)
