"""Fused residual-add + dropout + LayerNorm in Triton (forward and backward); plain LayerNorm is the same
kernel without the add.

Forward, per row: s = residual + dropout(x + x_bias); out = (s - mean) * rstd * weight + bias, with
statistics in float32 for every dtype. Each program normalises a (BLOCK_R, BLOCK_N) tile of whole rows.
The backward reads s as stored (in the input dtype) and recomputes its statistics from those values, so
x_hat is exactly that of the stored point (with saved fp32 statistics, a row of near-zero variance would
turn the rounding of s into large gradients). Each backward program walks a strided set of row
tiles and keeps its dweight/dbias/dx_bias partial sums in registers, written once per program as one row of
a (programs, hidden) float32 buffer that the launcher sums: no atomics, deterministic.

Dropout follows `semvlp.ops.rng`: element (row, column) is kept iff
uniform(philox(seed, c0=column, c1=row, c2=offset, c3=0)) >= p.
"""

import torch
import triton
import triton.language as tl

from ._common import Launch, launch_int32, num_programs_cap, upcast_in_kernel
from ._store import cast_for_store

MAX_HIDDEN = 8192


@triton.jit
def _keep(seed, offset, p_drop, rows, cols):
    """Bool (len(rows), len(cols)): True where dropout keeps the element."""
    c0 = (cols[None, :] + rows[:, None] * 0).to(tl.uint32, bitcast=True)
    c1 = (rows[:, None] + cols[None, :] * 0).to(tl.uint32, bitcast=True)
    r, _, _, _ = tl.philox(seed, c0, c1, offset.to(tl.uint32, bitcast=True), 0)
    return tl.uint_to_uniform_float(r) >= p_drop


@triton.jit
def _add_layer_norm_fwd(
    X,  # (rows, hidden); row stride stride_x, unit column stride
    RES,  # (rows, hidden) residual, read when HAS_RES
    XB,  # (hidden,) bias of x, read when HAS_XB
    W, B,  # (hidden,) LayerNorm weight and bias, read when HAS_W / HAS_B
    OUT,  # (rows, hidden) contiguous
    SUM,  # (rows, hidden) contiguous: the pre-norm sum s, written when STORE_SUM
    stride_x, stride_r, n_rows, hidden, eps, p_drop, seed, offset,
    HAS_RES: tl.constexpr, HAS_XB: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    HAS_DROPOUT: tl.constexpr, STORE_SUM: tl.constexpr, ROUND_BF16: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < hidden
    ok = (rows[:, None] < n_rows) & col_ok[None, :]
    rows64 = rows.to(tl.int64)
    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    if HAS_XB:
        x += tl.load(XB + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_DROPOUT:
        x = tl.where(_keep(seed, offset, p_drop, rows, cols), x * (1.0 / (1.0 - p_drop)), 0.0)
    if HAS_RES:
        x += tl.load(RES + rows64[:, None] * stride_r + cols[None, :], mask=ok, other=0.0).to(tl.float32)
    if STORE_SUM:
        tl.store(SUM + rows64[:, None] * hidden + cols[None, :], cast_for_store(x, SUM.dtype.element_ty, ROUND_BF16),
                 mask=ok)
    mean = tl.sum(x, 1) / hidden
    centered = tl.where(col_ok[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, 1) / hidden + eps)
    y = centered * rstd[:, None]
    if HAS_W:
        y = y * tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(OUT + rows64[:, None] * hidden + cols[None, :], cast_for_store(y, OUT.dtype.element_ty, ROUND_BF16),
             mask=ok)


@triton.jit
def _add_layer_norm_bwd(
    DOUT,  # (rows, hidden) contiguous: gradient of out
    DSUM,  # (rows, hidden) contiguous: gradient of the returned pre-norm sum, read when HAS_DSUM
    S,  # (rows, hidden) contiguous: the pre-norm sum (the input x for plain LayerNorm)
    W,  # (hidden,), read when HAS_W
    DS,  # (rows, hidden) contiguous: gradient of s (= of the residual; of x for plain LayerNorm)
    DX,  # (rows, hidden) contiguous: gradient of x through the dropout, written when HAS_DROPOUT
    DW_PART, DB_PART, DXB_PART,  # (programs, hidden) float32 partial sums over this program's rows
    n_rows, hidden, eps, p_drop, seed, offset,
    HAS_DSUM: tl.constexpr, HAS_W: tl.constexpr, HAS_DROPOUT: tl.constexpr, ROUND_BF16: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < hidden
    w = tl.full((BLOCK_N,), 1.0, tl.float32)
    if HAS_W:
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), tl.float32)
    db = tl.zeros((BLOCK_N,), tl.float32)
    dxb = tl.zeros((BLOCK_N,), tl.float32)
    for tile in range(pid, tl.cdiv(n_rows, BLOCK_R), programs):
        rows = tile * BLOCK_R + tl.arange(0, BLOCK_R)
        ok = (rows[:, None] < n_rows) & col_ok[None, :]
        ptrs = rows.to(tl.int64)[:, None] * hidden + cols[None, :]
        s = tl.load(S + ptrs, mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(DOUT + ptrs, mask=ok, other=0.0).to(tl.float32)
        centered = tl.where(ok, s - (tl.sum(s, 1) / hidden)[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, 1) / hidden + eps)
        x_hat = centered * rstd[:, None]
        dw += tl.sum(dy * x_hat, 0)
        db += tl.sum(dy, 0)
        g = dy * w[None, :]
        ds = rstd[:, None] * (g - (x_hat * (tl.sum(g * x_hat, 1) / hidden)[:, None]
                                   + (tl.sum(g, 1) / hidden)[:, None]))
        if HAS_DSUM:
            ds += tl.load(DSUM + ptrs, mask=ok, other=0.0).to(tl.float32)
        tl.store(DS + ptrs, cast_for_store(ds, DS.dtype.element_ty, ROUND_BF16), mask=ok)
        if HAS_DROPOUT:
            dx = tl.where(_keep(seed, offset, p_drop, rows, cols), ds * (1.0 / (1.0 - p_drop)), 0.0)
            tl.store(DX + ptrs, cast_for_store(dx, DX.dtype.element_ty, ROUND_BF16), mask=ok)
            dxb += tl.sum(tl.where(ok, dx, 0.0), 0)
        else:
            dxb += tl.sum(tl.where(ok, ds, 0.0), 0)
    part = pid.to(tl.int64) * hidden + cols
    tl.store(DW_PART + part, dw, mask=col_ok)
    tl.store(DB_PART + part, db, mask=col_ok)
    tl.store(DXB_PART + part, dxb, mask=col_ok)


def _tile(hidden: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_N, num_warps): whole rows per program, ~4k elements per tile, more warps for wide rows."""
    block_n = triton.next_power_of_2(hidden)
    block_r = max(1, min(16, 4096 // block_n))
    warps = min(16, max(4, block_r * block_n // 1024))
    return block_r, block_n, warps


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(..., hidden) -> (rows, hidden) with a unit column stride (a view where possible)."""
    flat = t.reshape(-1, t.shape[-1])
    return flat if flat.stride(-1) == 1 else flat.contiguous()


def forward_launch(x, residual, weight, bias, x_bias, dropout_p, eps, seed, offset, store_sum):
    """Returns (Launch, out, sum or None); x/residual are (rows, hidden) with unit column stride."""
    n_rows, hidden = x.shape
    if hidden > MAX_HIDDEN:
        raise ValueError(f"x: hidden size {hidden} exceeds the kernel's maximum {MAX_HIDDEN}")
    out = torch.empty((n_rows, hidden), dtype=x.dtype, device=x.device)
    total = torch.empty((n_rows, hidden), dtype=x.dtype, device=x.device) if store_sum else None
    block_r, block_n, warps = _tile(hidden)
    args = dict(
        X=x, RES=x if residual is None else residual, XB=out if x_bias is None else x_bias,
        W=out if weight is None else weight, B=out if bias is None else bias, OUT=out,
        SUM=out if total is None else total,
        stride_x=x.stride(0), stride_r=0 if residual is None else residual.stride(0), n_rows=n_rows, hidden=hidden,
        eps=eps, p_drop=dropout_p, seed=seed, offset=launch_int32(offset),
        HAS_RES=residual is not None, HAS_XB=x_bias is not None, HAS_W=weight is not None, HAS_B=bias is not None,
        HAS_DROPOUT=dropout_p > 0.0, STORE_SUM=store_sum, ROUND_BF16=upcast_in_kernel(x), BLOCK_R=block_r,
        BLOCK_N=block_n)
    return Launch(_add_layer_norm_fwd, (triton.cdiv(n_rows, block_r),), args, warps), out, total


def backward_launch(dout, dsum, s, weight, eps, dropout_p, seed, offset):
    """Returns (Launch, ds, dx or None, dw_part, db_part, dxb_part); all (rows, hidden) inputs contiguous."""
    n_rows, hidden = s.shape
    block_r, block_n, warps = _tile(hidden)
    programs = max(1, min(triton.cdiv(n_rows, block_r), num_programs_cap(s.device)))
    ds = torch.empty((n_rows, hidden), dtype=s.dtype, device=s.device)
    dx = torch.empty((n_rows, hidden), dtype=s.dtype, device=s.device) if dropout_p > 0.0 else None
    parts = torch.empty((3, programs, hidden), dtype=torch.float32, device=s.device)
    args = dict(
        DOUT=dout, DSUM=dout if dsum is None else dsum, S=s, W=s if weight is None else weight, DS=ds,
        DX=ds if dx is None else dx, DW_PART=parts[0], DB_PART=parts[1], DXB_PART=parts[2],
        n_rows=n_rows, hidden=hidden, eps=eps, p_drop=dropout_p, seed=seed, offset=launch_int32(offset),
        HAS_DSUM=dsum is not None, HAS_W=weight is not None, HAS_DROPOUT=dropout_p > 0.0,
        ROUND_BF16=upcast_in_kernel(s), BLOCK_R=block_r, BLOCK_N=block_n)
    return Launch(_add_layer_norm_bwd, (programs,), args, warps), ds, dx, parts[0], parts[1], parts[2]


def add_layer_norm_forward(x, residual, weight, bias, x_bias, *, dropout_p=0.0, eps=1e-12, seed=0, offset=0,
                           store_sum=False):
    """x/residual (..., hidden). Returns (out like x, sum like x or None)."""
    shape = x.shape
    x2 = _rows(x)
    res2 = None if residual is None else _rows(residual)
    launch, out, total = forward_launch(x2, res2, weight, bias, x_bias, dropout_p, eps, seed, offset, store_sum)
    if x2.shape[0]:
        launch.run()
    return out.view(shape), None if total is None else total.view(shape)


def add_layer_norm_backward(dout, dsum, s, weight, *, eps=1e-12, dropout_p=0.0, seed=0, offset=0):
    """Gradients from the saved sum s (..., hidden). Returns (ds, dx or None, dweight, dbias, dx_bias), the last
    three as float32 (hidden,) sums; dx is None without dropout (then dx = ds)."""
    shape = s.shape
    hidden = shape[-1]
    s2 = s.reshape(-1, hidden).contiguous()
    dout2 = dout.reshape(-1, hidden).contiguous()
    dsum2 = None if dsum is None else dsum.reshape(-1, hidden).contiguous()
    launch, ds, dx, dw, db, dxb = backward_launch(dout2, dsum2, s2, weight, eps, dropout_p, seed, offset)
    if s2.shape[0] == 0:
        dw, db, dxb = (torch.zeros(hidden, dtype=torch.float32, device=s.device) for _ in range(3))
        return ds.view(shape), None if dx is None else dx.view(shape), dw, db, dxb
    launch.run()
    return ds.view(shape), None if dx is None else dx.view(shape), dw.sum(0), db.sum(0), dxb.sum(0)


def dropout_keep_mask(seed: int, offset: int, dropout_p: float, n_rows: int, hidden: int, device) -> torch.Tensor:
    """Bool (rows, hidden): the mask `_add_layer_norm_fwd` draws, True = kept (for tests and debugging)."""
    mask = torch.empty((n_rows, hidden), dtype=torch.int8, device=device)
    if mask.numel():
        _keep_mask_kernel[(triton.cdiv(n_rows, 16),)](mask, dropout_p, seed, launch_int32(offset), n_rows, hidden,
                                                      BLOCK_R=16, BLOCK_N=triton.next_power_of_2(hidden))
    return mask.bool()


@triton.jit
def _keep_mask_kernel(MASK, p_drop, seed, offset, n_rows, hidden, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_N)
    keep = _keep(seed, offset, p_drop, rows, cols)
    tl.store(MASK + rows.to(tl.int64)[:, None] * hidden + cols[None, :], keep.to(tl.int8),
             mask=(rows[:, None] < n_rows) & (cols[None, :] < hidden))
