"""Triton bias-GELU as registered custom ops (`semvlp::triton_bias_gelu_fwd/_bwd`) with fake twins, and the
autograd.Function behind the `triton` backend's `bias_gelu`. Imported lazily: importing it imports triton."""

import torch
from torch import Tensor

from semvlp.kernels import bias_gelu as kernel


@torch.library.custom_op("semvlp::triton_bias_gelu_fwd", mutates_args=())
def bias_gelu_fwd(x: Tensor, bias: Tensor, approximate: str) -> Tensor:
    return kernel.bias_gelu_forward(x, bias, approximate)


@bias_gelu_fwd.register_fake
def _(x, bias, approximate):
    return x.new_empty(x.shape)


@torch.library.custom_op("semvlp::triton_bias_gelu_bwd", mutates_args=())
def bias_gelu_bwd(dy: Tensor, x: Tensor, bias: Tensor, approximate: str) -> tuple[Tensor, Tensor]:
    """Returns (dx like x, dbias float32 (features,))."""
    return kernel.bias_gelu_backward(dy, x, bias, approximate)


@bias_gelu_bwd.register_fake
def _(dy, x, bias, approximate):
    return x.new_empty(x.shape), x.new_empty((x.shape[-1],), dtype=torch.float32)


class TritonBiasGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, approximate):
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ctx.save_for_backward(x, bias)
            ctx.approximate = approximate
        return torch.ops.semvlp.triton_bias_gelu_fwd(x, bias, approximate)

    @staticmethod
    def backward(ctx, dy):
        x, bias = ctx.saved_tensors
        dx, dbias = torch.ops.semvlp.triton_bias_gelu_bwd(dy, x, bias, ctx.approximate)
        return dx, dbias.to(bias.dtype), None


def bias_gelu(x, bias, approximate="none"):
    """`semvlp.ops.bias_gelu` on the Triton kernels (inputs already checked)."""
    return TritonBiasGelu.apply(x, bias, approximate)
