"""add_layer_norm and layer_norm on the CUDA kernels of csrc/ (ops `semvlp::cuda_add_layer_norm_fwd/bwd`).

Rows are the flattened leading dims of x. Statistics are fp32; parameters of any float dtype go to the
kernel as fp32 and their gradients come back in their own dtype. Dropout follows the row-wise contract of
`semvlp/ops/rng.py` (c0 = column, c1 = row of the flattened input), from the (seed, offset) the public op draws.
"""

from __future__ import annotations

import torch

from .... import _ext


def _rows(t: torch.Tensor | None, hidden: int) -> torch.Tensor | None:
    return None if t is None else t.reshape(-1, hidden)


class CudaAddLayerNorm(torch.autograd.Function):
    """out = LayerNorm(residual + dropout(x + x_bias)), and the sum too when `prenorm`; residual=None: plain
    LayerNorm."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, x_bias, dropout_p, eps, prenorm, seed, offset):
        hidden = x.shape[-1]
        needs_grad = any(ctx.needs_input_grad[:5])
        out, prenorm_sum, rstd, _ = _ext.ops().cuda_add_layer_norm_fwd(
            _rows(x, hidden), _rows(residual, hidden), weight, bias, x_bias, dropout_p, eps, seed, offset, prenorm or needs_grad, False)
        if needs_grad:
            ctx.save_for_backward(prenorm_sum, weight, rstd)
        ctx.shape = x.shape
        ctx.options = (dropout_p, seed, offset, residual is not None, bias is not None, x_bias is not None)
        ctx.param_dtypes = tuple(None if t is None else t.dtype for t in (weight, bias, x_bias))
        ctx.prenorm = prenorm
        if prenorm:
            return out.view(x.shape), prenorm_sum.view(x.shape)
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, dout, dprenorm_sum=None):
        prenorm_sum, weight, rstd = ctx.saved_tensors
        hidden = ctx.shape[-1]
        dprenorm = _rows(dprenorm_sum, hidden) if ctx.prenorm else None
        dx, dresidual, dweight, dbias, dx_bias = _ext.ops().cuda_add_layer_norm_bwd(
            _rows(dout, hidden), dprenorm, prenorm_sum, weight, rstd, *ctx.options)
        _, _, _, has_residual, _, _ = ctx.options
        grads = [None if dtype is None else g.to(dtype) for g, dtype in zip((dweight, dbias, dx_bias), ctx.param_dtypes)]
        return (dx.view(ctx.shape), dresidual.view(ctx.shape) if has_residual else None, *grads) + (None,) * 5


def add_layer_norm(x, residual, weight, bias, *, x_bias=None, dropout_p=0.0, eps=1e-12, prenorm=False,
                   dropout_seed=(0, 0)):
    """`semvlp.ops.add_layer_norm` on the CUDA kernels (inputs checked; with dropout, the (seed, offset) pair drawn
    by the public op)."""
    return CudaAddLayerNorm.apply(x, residual, weight, bias, x_bias, dropout_p, eps, prenorm, *dropout_seed)


def layer_norm(x, weight, bias, eps=1e-12):
    """`semvlp.ops.layer_norm` on the CUDA kernels (inputs checked)."""
    return CudaAddLayerNorm.apply(x, None, weight, bias, None, 0.0, eps, False, 0, 0)


def add_layer_norm_with_keep_mask(x, residual, weight, bias, *, dropout_p, seed, offset, x_bias=None, eps=1e-12):
    """Debug path, no autograd: (out, keep_mask) for a given (seed, offset); keep_mask is bool like x, True =
    kept. Compare it with `rng.rowwise_keep_mask(seed, offset, dropout_p, rows, hidden)`."""
    hidden = x.shape[-1]
    out, _, _, mask = _ext.ops().cuda_add_layer_norm_fwd(
        _rows(x, hidden), _rows(residual, hidden), weight, bias, x_bias, float(dropout_p), float(eps), seed,
        offset, False, True)
    return out.view(x.shape), mask.view(x.shape)
