"""The CUDA kernels of csrc/ run on the CPU emulator (tests/cuda_emulator) and checked against the reference.

This executes the kernels' own source (tile loops, mma/ldmatrix fragment indexing, masking, online softmax,
dropout counters, atomics) without a GPU; the emulator also fails a kernel on a shared-memory race, an
out-of-bounds shared access, a divergent warp collective or an unwaited cp.async. What it cannot show
(timing, the hardware's own view of the PTX) is left to the `gpu` tests.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from cuda_emulator import emulated
from tolerances import GRAD_FACTOR, assert_within_rule

from semvlp.ops import rng
from semvlp.ops.backends import reference
from semvlp.ops.backends.padding import causal_allowed

pytestmark = pytest.mark.skipif(emulated.available() is not None, reason=f"emulator: {emulated.available()}")

SEED, OFFSET = 2**40 + 12345, 2**31 + 77  # both halves of the Philox key and a large counter word in use


def _cu(lengths) -> torch.Tensor:
    return torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)


def _visible(lens_q, lens_k, max_q, max_k, causal) -> torch.Tensor:
    """Bool (n_segments, 1, max_q, max_k): query row and key inside their segments and (causal) visible."""
    lq, lk = torch.tensor(lens_q), torch.tensor(lens_k)
    inside = ((torch.arange(max_q)[None, :, None] < lq[:, None, None])
              & (torch.arange(max_k)[None, None, :] < lk[:, None, None]))[:, None]
    if causal:
        inside = inside & causal_allowed(max_q, max_k, "cpu", lk - lq)
    return inside


def _leaves(*tensors, dtype=None):
    return [t.detach().to(dtype or t.dtype).requires_grad_() for t in tensors]


# (lens_q, lens_k, nheads, head_dim, dtype, causal, dropout_p)
ATTENTION_CASES = [
    ([5, 70], [9, 70], 2, 64, torch.float16, False, 0.0),
    ([1, 97, 0, 3], [1, 97, 4, 0], 1, 32, torch.bfloat16, False, 0.0),  # length 1, prime, empty segments
    ([20, 13], [36, 7], 2, 128, torch.float16, False, 0.1),  # cross-attention 20 x 36
    ([130], [131], 1, 32, torch.bfloat16, True, 0.2),  # three tiles each way, causal with q < k
    ([70], [30], 1, 64, torch.float16, True, 0.0),  # causal with q > k: the first 40 rows see no key
    ([64, 65], [64, 65], 2, 64, torch.bfloat16, True, 0.0),  # tile boundaries
    ([37], [37], 3, 128, torch.bfloat16, False, 0.3),
    ([2, 1], [11, 67], 1, 32, torch.float16, False, 0.5),
]


def _case_id(case) -> str:
    lens_q, lens_k, nheads, head_dim, dtype, causal, p = case
    return f"q{lens_q}-k{lens_k}-h{nheads}-d{head_dim}-{str(dtype)[6:]}-{'causal' if causal else 'full'}-p{p}"


def _check_attention(lens_q, lens_k, nheads, head_dim, dtype, causal, dropout_p, *, fused_qkv=False,
                     softmax_scale=None):
    gen = torch.Generator().manual_seed(sum(lens_q) * 1000 + head_dim)
    total_q, total_k = sum(lens_q), sum(lens_k)
    if fused_qkv:  # strided views of one (total, 3, nheads, head_dim) projection
        q, k, v = torch.randn(total_q, 3, nheads, head_dim, generator=gen).to(dtype).unbind(1)
    else:
        q = torch.randn(total_q, nheads, head_dim, generator=gen).to(dtype)
        k, v = torch.randn(2, total_k, nheads, head_dim, generator=gen).to(dtype).unbind(0)
    cu_q, cu_k = _cu(lens_q), _cu(lens_k)
    max_q, max_k = max(lens_q), max(lens_k)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    out, lse, mask = emulated.attention_fwd(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=scale, causal=causal,
                                            dropout_p=dropout_p, seed=SEED, offset=OFFSET)
    keep = None
    if dropout_p > 0:
        visible = _visible(lens_q, lens_k, max_q, max_k, causal).expand(-1, nheads, -1, -1)
        expected = rng.attention_keep_mask(SEED, OFFSET, dropout_p, len(lens_q), nheads, max_q, max_k)
        assert torch.equal(mask[visible], expected[visible]), "kernel dropout mask differs from the rng contract"
        keep = mask

    qf, kf, vf = _leaves(q, k, v, dtype=torch.float32)
    ql, kl, vl = _leaves(q, k, v)
    args = (cu_q, cu_k, max_q, max_k)
    options = dict(causal=causal, dropout_p=dropout_p, dropout_mask=keep, softmax_scale=scale)
    ref = reference.varlen_attention(qf, kf, vf, *args, **options)
    base = reference.varlen_attention(ql, kl, vl, *args, **options, upcast=False)
    assert_within_rule("out", out, ref, base)

    dout = torch.randn(q.shape, generator=gen).to(dtype)
    ref.backward(dout.float())
    base.backward(dout)
    grads = emulated.attention_bwd(dout, q, k, v, out, lse, *args, softmax_scale=scale, causal=causal,
                                   dropout_p=dropout_p, seed=SEED, offset=OFFSET)
    for name, grad, r, b in zip(("dq", "dk", "dv"), grads, (qf, kf, vf), (ql, kl, vl)):
        assert_within_rule(name, grad, r.grad, b.grad, factor=GRAD_FACTOR)


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=_case_id)
def test_attention_matches_reference(case):
    _check_attention(*case)


def test_attention_on_strided_fused_qkv():
    _check_attention([50, 19], [50, 19], 2, 64, torch.float16, False, 0.1, fused_qkv=True)


@pytest.mark.parametrize("causal,dropout_p", [(False, 0.0), (True, 0.1)])
def test_attention_honours_a_non_default_softmax_scale(causal, dropout_p):
    # 0.4 against the default 1/sqrt(64) = 0.125: a kernel that ignores the scale misses by far more than the rule.
    _check_attention([33, 70], [40, 70], 2, 64, torch.float16, causal, dropout_p, softmax_scale=0.4)


def test_rows_without_keys_give_zero_output_and_gradients():
    lens_q, lens_k = [6, 4], [0, 5]
    q = torch.randn(10, 1, 64).half()
    k, v = torch.randn(2, 5, 1, 64).half().unbind(0)
    cu_q, cu_k = _cu(lens_q), _cu(lens_k)
    out, lse, _ = emulated.attention_fwd(q, k, v, cu_q, cu_k, 6, 5, softmax_scale=0.125)
    assert torch.equal(out[:6], torch.zeros_like(out[:6]))
    assert torch.isinf(lse[:, :6]).all() and torch.isfinite(lse[:, 6:]).all()
    dq, _, _ = emulated.attention_bwd(torch.ones_like(q), q, k, v, out, lse, cu_q, cu_k, 6, 5, softmax_scale=0.125)
    assert torch.equal(dq[:6], torch.zeros_like(dq[:6]))
    assert dq[6:].abs().sum() > 0


# (rows, hidden, dtype, with residual, with weight and bias, with x_bias, dropout_p, prenorm)
LAYER_NORM_CASES = [
    (5, 768, torch.float16, True, True, True, 0.1, True),
    (3, 1000, torch.bfloat16, True, True, False, 0.0, False),
    (4, 33, torch.float32, True, False, True, 0.25, False),
    (7, 2049, torch.float16, False, True, False, 0.0, False),  # plain LayerNorm, 512 threads per row
    (1, 1, torch.float32, True, True, True, 0.0, True),
    (2, 1, torch.bfloat16, True, True, False, 0.0, False),  # zero variance: rstd = 1/sqrt(eps)
]


@pytest.mark.parametrize("rows,hidden,dtype,with_residual,affine,with_x_bias,dropout_p,prenorm", LAYER_NORM_CASES)
def test_add_layer_norm_matches_reference(rows, hidden, dtype, with_residual, affine, with_x_bias, dropout_p,
                                          prenorm):
    _check_layer_norm(rows, hidden, dtype, with_residual, affine, with_x_bias, dropout_p, prenorm)


@pytest.mark.parametrize("dtype,with_residual", [(torch.float32, True), (torch.bfloat16, False)])
def test_layer_norm_honours_a_non_default_eps(dtype, with_residual):
    # Rows of variance about 1e-4 with eps=1e-3: a kernel that drops the eps misses by far more than the rule.
    _check_layer_norm(6, 96, dtype, with_residual, True, with_residual, 0.0, with_residual, eps=1e-3, scale=0.01)


def _check_layer_norm(rows, hidden, dtype, with_residual, affine, with_x_bias, dropout_p, prenorm, *, eps=1e-5,
                      scale=1.0):
    gen = torch.Generator().manual_seed(rows * hidden)

    def randn(*shape, dt=dtype, factor=1.0):
        return (torch.randn(*shape, generator=gen) * factor).to(dt)

    x = randn(rows, hidden, factor=scale)
    residual = randn(rows, hidden, factor=scale) if with_residual else None
    weight, bias = (1 + randn(hidden, dt=torch.float32), randn(hidden, dt=torch.float32)) if affine else (None, None)
    x_bias = randn(hidden, factor=scale) if with_x_bias else None
    out, prenorm_sum, rstd, mask = emulated.layer_norm_fwd(x, residual, weight, bias, x_bias, eps=eps,
                                                                 dropout_p=dropout_p, seed=SEED, offset=OFFSET)
    if dropout_p > 0:
        assert torch.equal(mask, rng.rowwise_keep_mask(SEED, OFFSET, dropout_p, rows, hidden))
    keep = mask if dropout_p > 0 else None

    def run_reference(upcast, x_, residual_, weight_, bias_, x_bias_):
        if residual_ is None:
            return (reference.layer_norm(x_, weight_, bias_, eps=eps, upcast=upcast),)
        result = reference.add_layer_norm(x_, residual_, weight_, bias_, x_bias=x_bias_, dropout_p=dropout_p, eps=eps,
                                          prenorm=True, dropout_mask=keep, upcast=upcast)
        return result if prenorm else result[:1]

    # The oracle computes in fp32, or in fp64 for fp32 inputs (so that PyTorch's own fp32 is a real baseline).
    oracle = torch.float64 if dtype == torch.float32 else torch.float32
    present = (x, residual, weight, bias, x_bias)
    ref_leaves = [None if t is None else t.detach().to(oracle).requires_grad_() for t in present]
    base_leaves = [None if t is None else t.detach().clone().requires_grad_() for t in present]
    ref = run_reference(False, *ref_leaves)
    base = run_reference(False, *base_leaves)
    assert_within_rule("out", out, ref[0], base[0])
    if prenorm:
        assert_within_rule("prenorm_sum", prenorm_sum, ref[1], base[1])

    dout = randn(rows, hidden)
    dprenorm = randn(rows, hidden) if prenorm else None
    torch.autograd.backward(ref, [dout.to(oracle)] + ([dprenorm.to(oracle)] if prenorm else []))
    torch.autograd.backward(base, [dout] + ([dprenorm] if prenorm else []))
    grads = emulated.layer_norm_bwd(dout, dprenorm, prenorm_sum, weight, rstd, has_residual=with_residual,
                                    has_bias=affine, has_x_bias=with_x_bias, dropout_p=dropout_p, seed=SEED,
                                    offset=OFFSET)
    names = ("dx", "dresidual", "dweight", "dbias", "dx_bias")
    for name, grad, r, b in zip(names, grads, ref_leaves, base_leaves):
        if r is None:
            assert grad is None, f"{name}: expected no gradient"
            continue
        assert_within_rule(name, grad.to(b.grad.dtype), r.grad, b.grad, factor=GRAD_FACTOR)


@pytest.mark.parametrize("which,expected", [(0, "race"), (1, "outside"), (2, "diverge"), (3, "never waited")])
def test_emulator_reports_broken_kernels(which, expected):
    assert expected in emulated.broken_kernel_report(which)
