"""gelu(x + bias) in Triton, erf and tanh forms, forward and backward.

Inputs are viewed as (rows, features). The forward maps one (BLOCK_R, BLOCK_C) tile per program. The
backward walks a strided set of row tiles per column block, so each program also sums its share of
dbias in registers; the launcher adds the (programs, features) float32 partials (no atomics).
"""

import math

import torch
import triton
import triton.language as tl

from ._common import Launch, num_programs_cap, upcast_in_kernel
from ._store import cast_for_store

APPROXIMATIONS = ("none", "tanh")
_SQRT_HALF = tl.constexpr(1.0 / math.sqrt(2.0))
_INV_SQRT_2PI = tl.constexpr(1.0 / math.sqrt(2.0 * math.pi))
_TANH_C = tl.constexpr(math.sqrt(2.0 / math.pi))  # gelu_tanh(h) = h/2 * (1 + tanh(_TANH_C * (h + _CUBIC * h^3)))
_CUBIC = tl.constexpr(0.044715)


@triton.jit
def _tanh(z):
    # From exp(-2|z|) in (0, 1]: never overflows, saturates to +-1.
    e = tl.exp(-2.0 * tl.abs(z))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -t, t)


@triton.jit
def _gelu_and_grad(h, TANH: tl.constexpr, NEED_GRAD: tl.constexpr):
    """(gelu(h), d gelu / dh) in float32; the derivative is only computed when NEED_GRAD."""
    if TANH:
        t = _tanh((h + h * h * h * _CUBIC) * _TANH_C)
        y = 0.5 * h * (1.0 + t)
        grad = y
        if NEED_GRAD:
            grad = 0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * _TANH_C * (1.0 + h * h * (3.0 * _CUBIC))
    else:
        cdf = 0.5 * (1.0 + tl.erf(h * _SQRT_HALF))
        y = h * cdf
        grad = y
        if NEED_GRAD:
            grad = cdf + h * tl.exp(-0.5 * h * h) * _INV_SQRT_2PI
    return y, grad


@triton.jit
def _bias_gelu_fwd(
    X,  # (rows, features), row stride stride_x, unit column stride
    BIAS,  # (features,)
    Y,  # (rows, features) contiguous
    stride_x, n_rows, features,
    TANH: tl.constexpr, ROUND_BF16: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    rows = (tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    ok = (rows[:, None] < n_rows) & (cols[None, :] < features)
    h = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    h += tl.load(BIAS + cols, mask=cols < features, other=0.0).to(tl.float32)[None, :]
    y, _ = _gelu_and_grad(h, TANH, False)
    tl.store(Y + rows[:, None] * features + cols[None, :], cast_for_store(y, Y.dtype.element_ty, ROUND_BF16), mask=ok)


@triton.jit
def _bias_gelu_bwd(
    DY,  # (rows, features) contiguous
    X,  # (rows, features), row stride stride_x, unit column stride
    BIAS,  # (features,)
    DX,  # (rows, features) contiguous
    DBIAS_PART,  # (row programs, features) float32
    stride_x, n_rows, features,
    TANH: tl.constexpr, ROUND_BF16: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < features
    bias = tl.load(BIAS + cols, mask=col_ok, other=0.0).to(tl.float32)
    dbias = tl.zeros((BLOCK_C,), tl.float32)
    for tile in range(tl.program_id(1), tl.cdiv(n_rows, BLOCK_R), tl.num_programs(1)):
        rows = (tile * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        ok = (rows[:, None] < n_rows) & col_ok[None, :]
        h = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=ok, other=0.0).to(tl.float32) + bias[None, :]
        dy = tl.load(DY + rows[:, None] * features + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        _, grad = _gelu_and_grad(h, TANH, True)
        dx = tl.where(ok, dy * grad, 0.0)
        tl.store(DX + rows[:, None] * features + cols[None, :], cast_for_store(dx, DX.dtype.element_ty, ROUND_BF16),
                 mask=ok)
        dbias += tl.sum(dx, 0)
    tl.store(DBIAS_PART + tl.program_id(1).to(tl.int64) * features + cols, dbias, mask=col_ok)


def _tile(features: int) -> tuple[int, int]:
    block_c = min(256, max(16, triton.next_power_of_2(features)))
    return max(1, 4096 // block_c), block_c


def _rows(t: torch.Tensor) -> torch.Tensor:
    flat = t.reshape(-1, t.shape[-1])
    return flat if flat.stride(-1) == 1 else flat.contiguous()


def _check_approximate(approximate: str) -> None:
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"approximate: expected one of {APPROXIMATIONS}, got {approximate!r}")


def forward_launch(x2, bias, approximate):
    """x2 (rows, features) with unit column stride. Returns (Launch, y)."""
    _check_approximate(approximate)
    n_rows, features = x2.shape
    y = torch.empty((n_rows, features), dtype=x2.dtype, device=x2.device)
    block_r, block_c = _tile(features)
    args = dict(X=x2, BIAS=bias, Y=y, stride_x=x2.stride(0), n_rows=n_rows, features=features,
                TANH=approximate == "tanh", ROUND_BF16=upcast_in_kernel(x2), BLOCK_R=block_r, BLOCK_C=block_c)
    return Launch(_bias_gelu_fwd, (triton.cdiv(features, block_c), triton.cdiv(n_rows, block_r)), args, 4), y


def backward_launch(dy2, x2, bias, approximate):
    """Returns (Launch, dx (rows, features), dbias partials (programs, features) float32)."""
    _check_approximate(approximate)
    n_rows, features = x2.shape
    block_r, block_c = _tile(features)
    col_blocks = triton.cdiv(features, block_c)
    row_programs = max(1, min(triton.cdiv(n_rows, block_r),
                              triton.cdiv(num_programs_cap(x2.device), col_blocks)))
    dx = torch.empty((n_rows, features), dtype=x2.dtype, device=x2.device)
    parts = torch.empty((row_programs, features), dtype=torch.float32, device=x2.device)
    args = dict(DY=dy2, X=x2, BIAS=bias, DX=dx, DBIAS_PART=parts, stride_x=x2.stride(0), n_rows=n_rows,
                features=features, TANH=approximate == "tanh", ROUND_BF16=upcast_in_kernel(x2), BLOCK_R=block_r,
                BLOCK_C=block_c)
    return Launch(_bias_gelu_bwd, (col_blocks, row_programs), args, 4), dx, parts


def bias_gelu_forward(x, bias, approximate="none"):
    """x (..., features), bias (features,). Returns gelu(x + bias) like x (contiguous)."""
    x2 = _rows(x)
    launch, y = forward_launch(x2, bias, approximate)
    if y.numel():
        launch.run()
    return y.view(x.shape)


def bias_gelu_backward(dy, x, bias, approximate="none"):
    """Returns (dx like x, dbias float32 (features,))."""
    x2 = _rows(x)
    dy2 = dy.reshape(x2.shape).contiguous()
    launch, dx, parts = backward_launch(dy2, x2, bias, approximate)
    if dx.numel() == 0:
        return dx.view(x.shape), torch.zeros(x.shape[-1], dtype=torch.float32, device=x.device)
    launch.run()
    return dx.view(x.shape), parts.sum(0)
