"""FlashAttention-style attention in Triton: forward, backward and the dropout keep-mask debug kernel.

One kernel family serves both layouts: padded batches (batch, seqlen, nheads, headdim) with an optional
key-padding mask, and packed segments (total, nheads, headdim) with `cu_seqlens` offsets. A "segment" is a
batch row in the padded layout. Scores are never materialised: the forward keeps a running max and sum
(online softmax) and saves the log-sum-exp (base 2, of the scaled scores) per query row; the backward
recomputes the probabilities from it. The kernels share one prologue (program -> segment, head and their
ranges), one int64 base offset and one tile load; the forward and the dQ kernel walk the keys in an inner-loop
helper, as Triton's fused-attention tutorial does.

Dropout follows `semvlp.ops.rng`: element (i, j) of segment s, head h is kept iff
uniform(philox(seed, c0=i*max_seqlen_k+j, c1=s*nheads+h, c2=offset, c3=0)) >= p; `_keep` is the only
place that draws it and every kernel here (the debug `_keep_mask_kernel` included) calls it.

Query rows with no allowed key get zero output, log-sum-exp +inf (so every recomputed probability is 0)
and zero gradients.
"""

import math

import torch
import triton
import triton.language as tl

from ._common import DOT_PRECISION, Launch, autotune_enabled, interpreting, launch_int32, upcast_in_kernel
from ._store import cast_for_store

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 128


@triton.jit
def _keep(seed, offset, p_drop, rows, cols, max_seqlen_k, stream):
    """Bool (len(rows), len(cols)) block: True where the dropout keeps the probability."""
    c0 = (rows[:, None] * max_seqlen_k + cols[None, :]).to(tl.uint32, bitcast=True)
    r, _, _, _ = tl.philox(seed, c0, stream.to(tl.uint32, bitcast=True), offset.to(tl.uint32, bitcast=True), 0)
    return tl.uint_to_uniform_float(r) >= p_drop


@triton.jit
def _segment(CU, seg, seqlen, IS_VARLEN: tl.constexpr):
    """(start, length) of segment `seg`: from the offsets when packed, else (0, seqlen)."""
    if IS_VARLEN:
        start = tl.load(CU + seg)
        return start, tl.load(CU + seg + 1) - start
    return seg * 0, seqlen


@triton.jit
def _stream(nheads):
    """(stream, segment, head) of this program: grid axis 0 enumerates streams = segment * nheads + head."""
    stream = tl.program_id(0)
    return stream, stream // nheads, stream % nheads


@triton.jit
def _prologue(CU_Q, CU_K, nheads, seqlen_q, seqlen_k, IS_VARLEN: tl.constexpr):
    """(stream, seg, head, q_start, len_q, k_start, len_k): this program's stream and its segment's query and key
    ranges."""
    stream, seg, head = _stream(nheads)
    q_start, len_q = _segment(CU_Q, seg, seqlen_q, IS_VARLEN)
    k_start, len_k = _segment(CU_K, seg, seqlen_k, IS_VARLEN)
    return stream, seg, head, q_start, len_q, k_start, len_k


@triton.jit
def _offset(seg, start, head, stride_b, stride_t, stride_h):
    """Offset of (segment, first token, head) in int64: a batch or packed tensor may exceed 2**31 elements."""
    return seg.to(tl.int64) * stride_b + start.to(tl.int64) * stride_t + head * stride_h


@triton.jit
def _tile(base, rows, stride_t, offs_d):
    """base + row * stride_t + d for each (row, d) of rows x offs_d: pointers, or offsets for an integer base."""
    return base + rows[:, None] * stride_t + offs_d[None, :]


@triton.jit
def _load_tile(ptrs, mask, UPCAST: tl.constexpr):
    """The tile at `ptrs`, zero where masked, in float32 when UPCAST."""
    x = tl.load(ptrs, mask=mask, other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _key_end(m_start, len_q, len_k, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr):
    """End of the keys the query block at m_start sees: causally, none past its last row's diagonal."""
    end_n = len_k
    if CAUSAL:
        end_n = tl.minimum(len_k, m_start + BLOCK_M + len_k - len_q)
    return end_n


@triton.jit
def _allowed(rows, cols, len_q, len_k, key_mask_row, HAS_KEY_MASK: tl.constexpr, CAUSAL: tl.constexpr):
    """Bool (BLOCK_M, BLOCK_N): key j exists, is not padding, and (causal) j <= i + len_k - len_q."""
    allowed = (rows[:, None] < len_q) & (cols[None, :] < len_k)
    if HAS_KEY_MASK:
        real = tl.load(key_mask_row + cols, mask=cols < len_k, other=0)
        allowed = allowed & (real[None, :] != 0)
    if CAUSAL:
        allowed = allowed & (cols[None, :] <= rows[:, None] + (len_k - len_q))
    return allowed


@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q, K, V, stride_kt, stride_vt, key_mask_row, rows, offs_d, d_ok, len_q, len_k,
                    end_n, scale_log2, p_drop, seed, offset, seqlen_k, stream,
                    HAS_KEY_MASK: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                    UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online softmax of the query block `q` over the key blocks in [0, end_n): returns (acc, l_i, m_i), the
    unnormalised (dropped) P V, the row sums of P and the row maxima of the base-2 scaled scores."""
    offs_n = tl.arange(0, BLOCK_N)
    for n_start in range(0, end_n, BLOCK_N):
        cols = n_start + offs_n
        kv_ok = (cols[:, None] < len_k) & d_ok[None, :]
        k = _load_tile(_tile(K, cols, stride_kt, offs_d), kv_ok, UPCAST)
        v = _load_tile(_tile(V, cols, stride_vt, offs_d), kv_ok, UPCAST)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        allowed = _allowed(rows, cols, len_q, len_k, key_mask_row, HAS_KEY_MASK, CAUSAL)
        s = tl.where(allowed, qk * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with no allowed key so far keeps m = -inf; shifting by 0 instead avoids inf - inf.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_shift[:, None])
        alpha = tl.exp2(m_i - m_shift)
        l_i = l_i * alpha + tl.sum(p, 1)
        if HAS_DROPOUT:
            p = tl.where(_keep(seed, offset, p_drop, rows, cols, seqlen_k, stream), p, 0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(
    Q, K, V,  # (batch, seqlen_q|k, nheads, head_dim) padded, or (total_q|k, nheads, head_dim) packed
    O,  # like Q, contiguous
    LSE,  # (n_segments, nheads, seqlen_q) float32: log2-sum-exp2 of the scaled scores, +inf for empty rows
    KEY_MASK,  # (batch, seqlen_k) int8, 1 = real key; only read when HAS_KEY_MASK
    CU_Q, CU_K,  # (n_segments + 1,) int32 offsets; only read when IS_VARLEN
    scale_log2, p_drop, seed, offset,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh, stride_ob, stride_ot, stride_oh, stride_mb,
    nheads, seqlen_q, seqlen_k,  # seqlen_* are the max lengths when IS_VARLEN
    head_dim,
    tune_q, tune_k,  # length buckets, read by the autotuner only
    IS_VARLEN: tl.constexpr, HAS_KEY_MASK: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per (segment, head, query block): the output rows and their log-sum-exp."""
    stream, seg, head, q_start, len_q, k_start, len_k = _prologue(CU_Q, CU_K, nheads, seqlen_q, seqlen_k, IS_VARLEN)
    m_start = tl.program_id(1) * BLOCK_M
    if m_start >= len_q:
        return

    rows = m_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    Q += _offset(seg, q_start, head, stride_qb, stride_qt, stride_qh)
    K += _offset(seg, k_start, head, stride_kb, stride_kt, stride_kh)
    V += _offset(seg, k_start, head, stride_vb, stride_vt, stride_vh)
    key_mask_row = KEY_MASK + seg.to(tl.int64) * stride_mb

    q_ok = (rows[:, None] < len_q) & d_ok[None, :]
    q = _load_tile(_tile(Q, rows, stride_qt, offs_d), q_ok, UPCAST)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, K, V, stride_kt, stride_vt, key_mask_row, rows, offs_d, d_ok,
                                    len_q, len_k, _key_end(m_start, len_q, len_k, BLOCK_M, CAUSAL), scale_log2,
                                    p_drop, seed, offset, seqlen_k, stream, HAS_KEY_MASK, CAUSAL, HAS_DROPOUT,
                                    UPCAST, PRECISION, BLOCK_N)

    empty = l_i == 0.0
    out_scale = tl.where(empty, 0.0, 1.0 / tl.where(empty, 1.0, l_i))
    if HAS_DROPOUT:
        out_scale = out_scale / (1.0 - p_drop)
    out = acc * out_scale[:, None]
    O += _offset(seg, q_start, head, stride_ob, stride_ot, stride_oh)
    tl.store(_tile(O, rows, stride_ot, offs_d), cast_for_store(out, O.dtype.element_ty, UPCAST), mask=q_ok)
    lse = tl.where(empty, float("inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
    tl.store(LSE + stream.to(tl.int64) * seqlen_q + rows, lse, mask=rows < len_q)


@triton.jit
def _attn_bwd_preprocess(
    O, DO,  # like Q, contiguous
    DELTA,  # (n_segments, nheads, seqlen_q) float32: rowsum(dO * O)
    CU_Q, stride_ob, stride_ot, stride_oh, nheads, seqlen_q, head_dim,
    IS_VARLEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    stream, seg, head = _stream(nheads)
    q_start, len_q = _segment(CU_Q, seg, seqlen_q, IS_VARLEN)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    base = _offset(seg, q_start, head, stride_ob, stride_ot, stride_oh)
    ok = (rows[:, None] < len_q) & (offs_d[None, :] < head_dim)
    # delta is summed in float32 whatever the dtype.
    o = _load_tile(_tile(O + base, rows, stride_ot, offs_d), ok, True)
    do = _load_tile(_tile(DO + base, rows, stride_ot, offs_d), ok, True)
    tl.store(DELTA + stream.to(tl.int64) * seqlen_q + rows, tl.sum(o * do, 1), mask=rows < len_q)


@triton.jit
def _bwd_block(q, k, v, do, lse, delta, rows, cols, len_q, len_k, key_mask_row, scale_log2, p_drop, seed,
               offset, seqlen_k, stream, HAS_KEY_MASK: tl.constexpr, CAUSAL: tl.constexpr,
               HAS_DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """For one (BLOCK_M, BLOCK_N) tile: the dropped, rescaled probabilities (for dV) and dS (for dQ, dK).

    dS = P * (dP - delta) with dP = dO V^T * Z, Z the dropout's keep / (1 - p); delta = rowsum(dO * O).
    """
    qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    allowed = _allowed(rows, cols, len_q, len_k, key_mask_row, HAS_KEY_MASK, CAUSAL)
    p = tl.where(allowed, tl.exp2(qk * scale_log2 - lse[:, None]), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    if HAS_DROPOUT:
        keep = _keep(seed, offset, p_drop, rows, cols, seqlen_k, stream)
        inv_keep = 1.0 / (1.0 - p_drop)
        p_dropped = tl.where(keep, p * inv_keep, 0.0)
        dp = tl.where(keep, dp * inv_keep, 0.0)
    else:
        p_dropped = p
    return p_dropped, p * (dp - delta[:, None])


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO,  # DO like Q
    DQ_ACC,  # like Q, float32, zeroed; dQ accumulates here atomically when ATOMIC_DQ
    DK, DV,  # like K, contiguous
    LSE, DELTA,  # (n_segments, nheads, seqlen_q) float32
    KEY_MASK, CU_Q, CU_K,
    softmax_scale, scale_log2, p_drop, seed, offset,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh, stride_ob, stride_ot, stride_oh, stride_dkb, stride_dkt, stride_dkh,
    stride_mb,
    nheads, seqlen_q, seqlen_k, head_dim,
    tune_q, tune_k,
    IS_VARLEN: tl.constexpr, HAS_KEY_MASK: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    ATOMIC_DQ: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per (segment, head, key block): dK and dV over all query blocks (and dQ by atomics)."""
    stream, seg, head, q_start, len_q, k_start, len_k = _prologue(CU_Q, CU_K, nheads, seqlen_q, seqlen_k, IS_VARLEN)
    n_start = tl.program_id(1) * BLOCK_N
    if n_start >= len_k:
        return

    cols = n_start + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    Q += _offset(seg, q_start, head, stride_qb, stride_qt, stride_qh)
    K += _offset(seg, k_start, head, stride_kb, stride_kt, stride_kh)
    V += _offset(seg, k_start, head, stride_vb, stride_vt, stride_vh)
    do_base = _offset(seg, q_start, head, stride_ob, stride_ot, stride_oh)
    DO += do_base
    DQ_ACC += do_base
    key_mask_row = KEY_MASK + seg.to(tl.int64) * stride_mb
    LSE += stream.to(tl.int64) * seqlen_q
    DELTA += stream.to(tl.int64) * seqlen_q

    kv_ok = (cols[:, None] < len_k) & d_ok[None, :]
    k = _load_tile(_tile(K, cols, stride_kt, offs_d), kv_ok, UPCAST)
    v = _load_tile(_tile(V, cols, stride_vt, offs_d), kv_ok, UPCAST)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    m_begin = 0
    if CAUSAL:
        # Query i sees key j iff i >= j - (len_k - len_q): earlier query blocks see none of these keys.
        m_begin = tl.maximum(n_start - (len_k - len_q), 0) // BLOCK_M * BLOCK_M
    for m_start in range(m_begin, len_q, BLOCK_M):
        rows = m_start + offs_m
        q_ok = (rows[:, None] < len_q) & d_ok[None, :]
        q = _load_tile(_tile(Q, rows, stride_qt, offs_d), q_ok, UPCAST)
        do = _load_tile(_tile(DO, rows, stride_ot, offs_d), q_ok, UPCAST)
        lse = tl.load(LSE + rows, mask=rows < len_q, other=float("inf"))
        delta = tl.load(DELTA + rows, mask=rows < len_q, other=0.0)
        p_dropped, ds = _bwd_block(q, k, v, do, lse, delta, rows, cols, len_q, len_k, key_mask_row, scale_log2,
                                   p_drop, seed, offset, seqlen_k, stream, HAS_KEY_MASK, CAUSAL, HAS_DROPOUT,
                                   PRECISION)
        dv = tl.dot(tl.trans(p_dropped.to(do.dtype)), do, dv, input_precision=PRECISION)
        dk = tl.dot(tl.trans(ds.to(q.dtype)), q, dk, input_precision=PRECISION)
        if ATOMIC_DQ:
            dq = tl.dot(ds.to(k.dtype), k, input_precision=PRECISION) * softmax_scale
            tl.atomic_add(_tile(DQ_ACC, rows, stride_ot, offs_d), dq, mask=q_ok)

    # dK and dV have the same strides: one offset tile serves both.
    dk_offs = _tile(_offset(seg, k_start, head, stride_dkb, stride_dkt, stride_dkh), cols, stride_dkt, offs_d)
    tl.store(DK + dk_offs, cast_for_store(dk * softmax_scale, DK.dtype.element_ty, UPCAST), mask=kv_ok)
    tl.store(DV + dk_offs, cast_for_store(dv, DV.dtype.element_ty, UPCAST), mask=kv_ok)


@triton.jit
def _attn_bwd_dq_inner(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, key_mask_row, rows, offs_d, d_ok, len_q,
                       len_k, end_n, scale_log2, p_drop, seed, offset, seqlen_k, stream,
                       HAS_KEY_MASK: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
                       UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """dq + dS K over the key blocks in [0, end_n) (dQ before the softmax scale)."""
    offs_n = tl.arange(0, BLOCK_N)
    for n_start in range(0, end_n, BLOCK_N):
        cols = n_start + offs_n
        kv_ok = (cols[:, None] < len_k) & d_ok[None, :]
        k = _load_tile(_tile(K, cols, stride_kt, offs_d), kv_ok, UPCAST)
        v = _load_tile(_tile(V, cols, stride_vt, offs_d), kv_ok, UPCAST)
        _, ds = _bwd_block(q, k, v, do, lse, delta, rows, cols, len_q, len_k, key_mask_row, scale_log2, p_drop,
                           seed, offset, seqlen_k, stream, HAS_KEY_MASK, CAUSAL, HAS_DROPOUT, PRECISION)
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO,
    DQ,  # like Q, contiguous; written once per element (the deterministic path)
    LSE, DELTA, KEY_MASK, CU_Q, CU_K,
    softmax_scale, scale_log2, p_drop, seed, offset,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh,
    stride_vb, stride_vt, stride_vh, stride_ob, stride_ot, stride_oh, stride_mb,
    nheads, seqlen_q, seqlen_k, head_dim,
    tune_q, tune_k,
    IS_VARLEN: tl.constexpr, HAS_KEY_MASK: tl.constexpr, CAUSAL: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per (segment, head, query block): dQ over all key blocks, without atomics."""
    stream, seg, head, q_start, len_q, k_start, len_k = _prologue(CU_Q, CU_K, nheads, seqlen_q, seqlen_k, IS_VARLEN)
    m_start = tl.program_id(1) * BLOCK_M
    if m_start >= len_q:
        return

    rows = m_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    K += _offset(seg, k_start, head, stride_kb, stride_kt, stride_kh)
    V += _offset(seg, k_start, head, stride_vb, stride_vt, stride_vh)
    key_mask_row = KEY_MASK + seg.to(tl.int64) * stride_mb

    q_ok = (rows[:, None] < len_q) & d_ok[None, :]
    Q += _offset(seg, q_start, head, stride_qb, stride_qt, stride_qh)
    q = _load_tile(_tile(Q, rows, stride_qt, offs_d), q_ok, UPCAST)
    # dO and dQ have the same strides: one offset tile serves both.
    do_offs = _tile(_offset(seg, q_start, head, stride_ob, stride_ot, stride_oh), rows, stride_ot, offs_d)
    do = _load_tile(DO + do_offs, q_ok, UPCAST)
    lse = tl.load(LSE + stream.to(tl.int64) * seqlen_q + rows, mask=rows < len_q, other=float("inf"))
    delta = tl.load(DELTA + stream.to(tl.int64) * seqlen_q + rows, mask=rows < len_q, other=0.0)
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, K, V, stride_kt, stride_vt, key_mask_row, rows, offs_d, d_ok,
                            len_q, len_k, _key_end(m_start, len_q, len_k, BLOCK_M, CAUSAL), scale_log2, p_drop, seed,
                            offset, seqlen_k, stream, HAS_KEY_MASK, CAUSAL, HAS_DROPOUT, UPCAST, PRECISION, BLOCK_N)
    tl.store(DQ + do_offs, cast_for_store(dq * softmax_scale, DQ.dtype.element_ty, UPCAST), mask=q_ok)


@triton.jit
def _keep_mask_kernel(
    MASK,  # (n_segments, nheads, seqlen_q, seqlen_k) int8, 1 = kept
    p_drop, seed, offset, nheads, seqlen_q, seqlen_k,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The keep mask the attention kernels draw (the same `_keep`), written out for tests and debugging."""
    stream = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    keep = _keep(seed, offset, p_drop, rows, cols, seqlen_k, stream)
    ptrs = MASK + stream.to(tl.int64) * seqlen_q * seqlen_k + rows[:, None] * seqlen_k + cols[None, :]
    tl.store(ptrs, keep.to(tl.int8), mask=(rows[:, None] < seqlen_q) & (cols[None, :] < seqlen_k))


# ---------------------------------------------------------------------------------------------------------
# Block sizes. Short vision-language lengths (20-200) want small query blocks so that batch x heads x
# blocks fills the GPU; long sequences want 128-wide tiles. On a GPU the autotuner picks among the configs
# that fit the length bucket; under the interpreter (and with SEMVLP_TRITON_AUTOTUNE=0) one config is used.

def _config(block_m, block_n, warps, stages):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages)


FWD_CONFIGS = [
    _config(32, 32, 4, 2), _config(64, 32, 4, 3), _config(64, 64, 4, 3), _config(128, 32, 4, 3),
    _config(128, 64, 4, 3), _config(128, 64, 8, 3), _config(128, 128, 8, 2),
]
BWD_CONFIGS = [
    _config(32, 32, 4, 2), _config(32, 64, 4, 2), _config(64, 64, 4, 2), _config(64, 128, 8, 2),
    _config(128, 64, 8, 2), _config(128, 128, 8, 2),
]
INTERPRET_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}
# fp32 runs exact products on CUDA cores: tiles above 64x32 exceed Hopper's shared memory or compile for minutes.
FP32_MAX_TILE = 64 * 32
# Vision-language lengths (up to ~200 tokens, bucket 256) tune among query tiles of at most 64 rows.
SHORT_BUCKET = 256
SHORT_MAX_BLOCK_M = 64


def _length_bucket(n: int) -> int:
    return max(32, triton.next_power_of_2(max(n, 1)))


def _fits(block_m: int, block_n: int, tune_q: int, tune_k: int, fp32: bool) -> bool:
    """Tiles no longer than the length buckets; query tiles of at most 64 rows for short sequences (a 128-row
    tile of a 140-token sequence is mostly padding) and at least 64 for long ones; small tiles for fp32."""
    regime = block_m <= SHORT_MAX_BLOCK_M if tune_q <= SHORT_BUCKET else block_m >= SHORT_MAX_BLOCK_M
    return (block_m <= tune_q and block_n <= tune_k and regime
            and (not fp32 or block_m * block_n <= FP32_MAX_TILE))


def _prune(configs, named_args, **kwargs):
    # The autotuner passes positional arguments in `named_args` and keyword arguments (how the launchers call
    # the kernels) in `kwargs`.
    args = {**named_args, **kwargs}
    fp32 = args["Q"].dtype == torch.float32
    fitting = [c for c in configs
               if _fits(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], args["tune_q"], args["tune_k"], fp32)]
    return fitting or configs[:1]


def default_config(seqlen_q: int, seqlen_k: int, head_dim: int, backward: bool, dtype=torch.bfloat16) -> dict:
    """The untuned choice: 64x64 tiles for short sequences, 128-row tiles for long ones, 64x32 for fp32."""
    if dtype == torch.float32:
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    if backward:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4 if head_dim <= 64 else 8, "num_stages": 2}
    if min(seqlen_q, seqlen_k) >= 512:
        return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4 if head_dim <= 64 else 8, "num_stages": 3}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}


_TUNE_KEY = ["tune_q", "tune_k", "head_dim", "IS_VARLEN", "HAS_KEY_MASK", "CAUSAL", "HAS_DROPOUT"]
_tuned_fwd = triton.autotune(FWD_CONFIGS, key=_TUNE_KEY, prune_configs_by={"early_config_prune": _prune})(_attn_fwd)
_tuned_dkdv = triton.autotune(BWD_CONFIGS, key=_TUNE_KEY + ["ATOMIC_DQ"],
                              prune_configs_by={"early_config_prune": _prune}, reset_to_zero=["DQ_ACC"])(_attn_bwd_dkdv)
_tuned_dq = triton.autotune(BWD_CONFIGS, key=_TUNE_KEY, prune_configs_by={"early_config_prune": _prune})(_attn_bwd_dq)


# ---------------------------------------------------------------------------------------------------------
# Launchers. They take q/k/v in either layout (4-d padded or 3-d packed), check, allocate and build the
# launches (`forward_launch`, `backward_launches`) that the public functions run.

def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _token_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(segment, token, head) strides: the batch stride is 0 for packed tensors."""
    if t.dim() == 4:
        return t.stride(0), t.stride(1), t.stride(2)
    return 0, t.stride(0), t.stride(1)


class Problem:
    """Sizes, strides and flags shared by the kernels of one attention call."""

    def __init__(self, q, k, v, key_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                 causal, dropout_p, seed, offset):
        if q.dim() not in (3, 4):
            raise ValueError(f"q: expected a 4-d padded or 3-d packed tensor, got shape {tuple(q.shape)}")
        self.varlen = q.dim() == 3
        if self.varlen and (cu_seqlens_q is None or cu_seqlens_k is None):
            raise ValueError("cu_seqlens_q/cu_seqlens_k: required for packed (3-d) q/k/v")
        if key_mask is not None and self.varlen:
            raise ValueError("key_mask: only for padded (4-d) q/k/v; packed segments carry their lengths")
        self.head_dim = q.shape[-1]
        if self.head_dim > MAX_HEAD_DIM:
            raise ValueError(f"q: head dim {self.head_dim} exceeds the kernel's maximum {MAX_HEAD_DIM}")
        self.nheads = q.shape[-2]
        if self.varlen:
            self.n_segments = cu_seqlens_q.numel() - 1
            self.seqlen_q, self.seqlen_k = max_seqlen_q, max_seqlen_k
        else:
            self.n_segments = q.shape[0]
            self.seqlen_q, self.seqlen_k = q.shape[1], k.shape[1]
        self.softmax_scale = softmax_scale
        self.causal = causal
        self.dropout_p = dropout_p
        self.seed, self.offset = seed, launch_int32(offset)
        self.key_mask = None if key_mask is None else key_mask.to(torch.int8)
        self.cu_q, self.cu_k = cu_seqlens_q, cu_seqlens_k
        self.upcast = upcast_in_kernel(q)
        self.dtype = q.dtype
        self.precision = DOT_PRECISION[q.dtype]
        self.block_d = max(16, triton.next_power_of_2(self.head_dim))

    @property
    def streams(self) -> int:
        return self.n_segments * self.nheads

    def common_args(self, dummy: torch.Tensor) -> dict:
        return dict(
            KEY_MASK=dummy if self.key_mask is None else self.key_mask,
            CU_Q=dummy if self.cu_q is None else self.cu_q,
            CU_K=dummy if self.cu_k is None else self.cu_k,
            scale_log2=self.softmax_scale * LOG2E, p_drop=self.dropout_p, seed=self.seed, offset=self.offset,
            stride_mb=0 if self.key_mask is None else self.key_mask.stride(0),
            nheads=self.nheads, seqlen_q=self.seqlen_q, seqlen_k=self.seqlen_k, head_dim=self.head_dim,
            tune_q=_length_bucket(self.seqlen_q), tune_k=_length_bucket(self.seqlen_k),
            IS_VARLEN=self.varlen, HAS_KEY_MASK=self.key_mask is not None, CAUSAL=self.causal,
            HAS_DROPOUT=self.dropout_p > 0.0, UPCAST=self.upcast, PRECISION=self.precision, BLOCK_D=self.block_d,
        )

    def config(self, backward: bool) -> dict | None:
        """None = autotune; else the fixed config."""
        if interpreting():
            return INTERPRET_CONFIG
        if autotune_enabled():
            return None
        return default_config(self.seqlen_q, self.seqlen_k, self.head_dim, backward, self.dtype)


def _strides(prefix: str, t: torch.Tensor) -> dict:
    b, s, h = _token_strides(t)
    return {f"stride_{prefix}b": b, f"stride_{prefix}t": s, f"stride_{prefix}h": h}


def forward_args(pb: Problem, q, k, v, out, lse) -> dict:
    return dict(Q=q, K=k, V=v, O=out, LSE=lse, **_strides("q", q), **_strides("k", k), **_strides("v", v),
                **_strides("o", out), **pb.common_args(lse))


def preprocess_args(pb: Problem, out, dout, delta) -> dict:
    return dict(O=out, DO=dout, DELTA=delta, CU_Q=delta if pb.cu_q is None else pb.cu_q, **_strides("o", out),
                nheads=pb.nheads, seqlen_q=pb.seqlen_q, head_dim=pb.head_dim, IS_VARLEN=pb.varlen,
                BLOCK_M=64, BLOCK_D=pb.block_d)


def dkdv_args(pb: Problem, q, k, v, dout, dq_acc, dk, dv, lse, delta, atomic_dq: bool) -> dict:
    return dict(Q=q, K=k, V=v, DO=dout, DQ_ACC=dq_acc, DK=dk, DV=dv, LSE=lse, DELTA=delta,
                softmax_scale=pb.softmax_scale, **_strides("q", q), **_strides("k", k), **_strides("v", v),
                **_strides("o", dout), **_strides("dk", dk), ATOMIC_DQ=atomic_dq, **pb.common_args(lse))


def dq_args(pb: Problem, q, k, v, dout, dq, lse, delta) -> dict:
    return dict(Q=q, K=k, V=v, DO=dout, DQ=dq, LSE=lse, DELTA=delta, softmax_scale=pb.softmax_scale,
                **_strides("q", q), **_strides("k", k), **_strides("v", v), **_strides("o", dout),
                **pb.common_args(lse))


def _launch(kernel, tuned, args: dict, grid_rows: int, streams: int, block_key: str, config: dict | None) -> Launch:
    """`tuned` (autotuned) or `kernel` with a fixed config; grid = (streams, blocks along grid_rows)."""
    if config is None:
        return Launch(tuned, lambda meta: (streams, triton.cdiv(grid_rows, meta[block_key])), args, None, None)
    blocks = {name: config[name] for name in ("BLOCK_M", "BLOCK_N")}
    return Launch(kernel, (streams, triton.cdiv(grid_rows, config[block_key])), {**args, **blocks},
                  config["num_warps"], config["num_stages"])


def forward_launch(pb: Problem, q, k, v) -> tuple[Launch, torch.Tensor, torch.Tensor]:
    """Returns (Launch, out like q (contiguous), lse float32 (n_segments, nheads, seqlen_q))."""
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse_shape = (pb.n_segments, pb.nheads, pb.seqlen_q)
    if pb.varlen:
        # Segments shorter than max_seqlen_q leave rows unwritten; they read as "no key" (+inf).
        lse = torch.full(lse_shape, float("inf"), dtype=torch.float32, device=q.device)
    else:
        lse = torch.empty(lse_shape, dtype=torch.float32, device=q.device)
    launch = _launch(_attn_fwd, _tuned_fwd, forward_args(pb, q, k, v, out, lse), pb.seqlen_q, pb.streams, "BLOCK_M",
                     pb.config(backward=False))
    return launch, out, lse


def backward_launches(pb: Problem, q, k, v, out, dout, lse, deterministic: bool):
    """Returns (launches to run in order, dq, dk, dv): dq in q's dtype when `deterministic` (a second pass
    writes it), else the float32 accumulator of the dK/dV kernel's atomics. dout and out: contiguous."""
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    delta = torch.empty_like(lse)
    config = pb.config(backward=True)
    launches = [Launch(_attn_bwd_preprocess, (pb.streams, triton.cdiv(pb.seqlen_q, 64)),
                       preprocess_args(pb, out, dout, delta))]
    if deterministic:
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        launches += [
            _launch(_attn_bwd_dkdv, _tuned_dkdv, dkdv_args(pb, q, k, v, dout, dq, dk, dv, lse, delta, False),
                    pb.seqlen_k, pb.streams, "BLOCK_N", config),
            _launch(_attn_bwd_dq, _tuned_dq, dq_args(pb, q, k, v, dout, dq, lse, delta), pb.seqlen_q, pb.streams,
                    "BLOCK_M", config),
        ]
    else:
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        launches.append(_launch(_attn_bwd_dkdv, _tuned_dkdv, dkdv_args(pb, q, k, v, dout, dq, dk, dv, lse, delta, True),
                                pb.seqlen_k, pb.streams, "BLOCK_N", config))
    return launches, dq, dk, dv


def attention_forward(q, k, v, *, key_mask=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0,
                      max_seqlen_k=0, softmax_scale=None, causal=False, dropout_p=0.0, seed=0, offset=0):
    """Returns (out like q, contiguous; lse float32 (n_segments, nheads, seqlen_q))."""
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    pb = Problem(q, k, v, key_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                 dropout_p, seed, offset)
    launch, out, lse = forward_launch(pb, q, k, v)
    if out.numel():
        launch.run()
    return out, lse


def attention_backward(dout, q, k, v, out, lse, *, key_mask=None, cu_seqlens_q=None, cu_seqlens_k=None,
                       max_seqlen_q=0, max_seqlen_k=0, softmax_scale=None, causal=False, dropout_p=0.0, seed=0,
                       offset=0, deterministic=False):
    """Returns (dq, dk, dv), contiguous, dtypes of q/k/v. `deterministic` replaces dQ's atomics by a second pass."""
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    # dO, O, dQ share one set of (contiguous) strides in the kernels.
    out, dout = out.contiguous(), dout.contiguous()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    pb = Problem(q, k, v, key_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                 dropout_p, seed, offset)
    if q.numel() == 0 or k.numel() == 0:
        return (torch.zeros(q.shape, dtype=q.dtype, device=q.device),
                torch.zeros(k.shape, dtype=k.dtype, device=k.device),
                torch.zeros(v.shape, dtype=v.dtype, device=v.device))
    launches, dq, dk, dv = backward_launches(pb, q, k, v, out, dout, lse, deterministic)
    for launch in launches:
        launch.run()
    # The atomics' float32 accumulator becomes q's dtype; the deterministic dq already is.
    return dq.to(q.dtype), dk, dv


def dropout_keep_mask(seed: int, offset: int, dropout_p: float, n_segments: int, nheads: int, max_seqlen_q: int,
                      max_seqlen_k: int, device) -> torch.Tensor:
    """Bool (n_segments, nheads, max_seqlen_q, max_seqlen_k): the mask the kernels above draw, True = kept."""
    mask = torch.empty((n_segments, nheads, max_seqlen_q, max_seqlen_k), dtype=torch.int8, device=device)
    if mask.numel():
        grid = (n_segments * nheads, triton.cdiv(max_seqlen_q, 32), triton.cdiv(max_seqlen_k, 32))
        args = dict(MASK=mask, p_drop=dropout_p, seed=seed, offset=launch_int32(offset), nheads=nheads,
                    seqlen_q=max_seqlen_q, seqlen_k=max_seqlen_k, BLOCK_M=32, BLOCK_N=32)
        Launch(_keep_mask_kernel, grid, args).run()
    return mask.bool()
