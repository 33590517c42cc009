"""The triton backend's attention against the reference: outputs and dq/dk/dv with the tolerance rule, on
awkward shapes under Triton's interpreter (CPU) or on the GPU."""

import math

import pytest
import torch

from semvlp import ops
from semvlp.ops.backends import reference
from triton_compare import check_against_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _qkv(batch, seqlen_q, seqlen_k, nheads, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape_q, shape_k = (batch, seqlen_q, nheads, head_dim), (batch, seqlen_k, nheads, head_dim)
    return [torch.randn(s, generator=gen).to(DEVICE, dtype) for s in (shape_q, shape_k, shape_k)]


def _key_mask(batch, seqlen_k, seed=0):
    """Random padding with the first row all padding and the last row all real keys."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, seqlen_k, generator=gen) > 0.35
    mask[0] = False
    mask[-1] = True
    return mask.to(DEVICE)


def _attention(**kw):
    return ops.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), backend="triton", **kw)


def _reference(**kw):
    return reference.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), **kw)


# (batch, seqlen_q, seqlen_k, nheads, head_dim, key padding, causal)
PADDED_CASES = [
    (2, 37, 45, 2, 40, False, False),
    (3, 45, 37, 1, 64, True, False),
    (2, 1, 70, 3, 16, True, False),
    (1, 33, 1, 2, 80, False, False),
    (2, 20, 20, 2, 128, True, True),
    (2, 45, 30, 1, 96, False, True),  # causal with seqlen_q > seqlen_k: the first 15 rows have no key
    (1, 30, 45, 2, 24, True, True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", PADDED_CASES, ids=lambda c: "b{}_q{}_k{}_h{}_d{}_mask{:d}_causal{:d}".format(*c))
def test_padded_attention_matches_reference(case, dtype):
    batch, seqlen_q, seqlen_k, nheads, head_dim, padded, causal = case
    q, k, v = _qkv(batch, seqlen_q, seqlen_k, nheads, head_dim, dtype)
    mask = _key_mask(batch, seqlen_k) if padded else None
    check_against_reference(_attention, _reference, dict(q=q, k=k, v=v, attention_mask=mask, causal=causal))


def _varlen(lengths_q, lengths_k, nheads, head_dim, dtype, seed=0):
    cu_q = torch.tensor([0] + lengths_q, dtype=torch.int32).cumsum(0, dtype=torch.int32).to(DEVICE)
    cu_k = torch.tensor([0] + lengths_k, dtype=torch.int32).cumsum(0, dtype=torch.int32).to(DEVICE)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(lengths_q), nheads, head_dim, generator=gen).to(DEVICE, dtype)
    k = torch.randn(sum(lengths_k), nheads, head_dim, generator=gen).to(DEVICE, dtype)
    v = torch.randn(sum(lengths_k), nheads, head_dim, generator=gen).to(DEVICE, dtype)
    return dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(lengths_q),
                max_seqlen_k=max(lengths_k))


def _varlen_attention(**kw):
    return ops.varlen_attention(**kw, backend="triton")


# Segment lengths (queries, keys): empty query segment, empty key segment (zero output), lengths 1, and
# cross-attention shapes (20 x 36, 36 x 20).
VARLEN_CASES = [
    ([13, 0, 41, 1, 20], [29, 7, 41, 1, 36], False),
    ([36, 5, 33], [20, 0, 33], False),
    ([13, 40, 1, 35], [29, 7, 1, 35], True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", VARLEN_CASES, ids=["self_cross", "empty_keys", "causal"])
def test_varlen_attention_matches_reference(case, dtype):
    lengths_q, lengths_k, causal = case
    inputs = _varlen(lengths_q, lengths_k, 3, 40, dtype)
    check_against_reference(_varlen_attention, reference.varlen_attention, dict(inputs, causal=causal))


def test_softmax_scale_is_used():
    q, k, v = _qkv(2, 19, 23, 2, 32, torch.float32)
    check_against_reference(_attention, _reference, dict(q=q, k=k, v=v, softmax_scale=0.3))
    default = ops.attention(q, k, v, backend="triton")
    scaled = ops.attention(q, k, v, softmax_scale=0.3, backend="triton")
    assert (default - scaled).abs().max() > 1e-3


def test_rows_without_keys_give_zero_output_and_gradients():
    q, k, v = (t.requires_grad_() for t in _qkv(2, 17, 21, 2, 32, torch.float16))
    mask = _key_mask(2, 21)  # batch row 0 is all padding
    out = ops.attention(q, k, v, attention_mask=mask, backend="triton")
    out.backward(torch.randn_like(out))
    for name, t in (("out", out), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
        assert torch.isfinite(t).all(), name
        assert (t[0] == 0).all(), f"{name} of the all-padding batch row is not zero"
    assert (out[1] != 0).any()


def test_non_contiguous_inputs_match_contiguous():
    """q/k/v split from one fused projection (strided heads) give the result of contiguous copies."""
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(2, 29, 3, 2, 40, generator=gen).to(DEVICE)
    q, k, v = qkv.unbind(dim=2)
    strided = ops.attention(q, k, v, backend="triton")
    packed = ops.attention(q.contiguous(), k.contiguous(), v.contiguous(), backend="triton")
    torch.testing.assert_close(strided, packed, rtol=0, atol=0)


def test_deterministic_backward_matches_reference_and_repeats_bitwise():
    q, k, v = _qkv(2, 37, 45, 2, 40, torch.float32)
    mask = _key_mask(2, 45)
    inputs = dict(q=q, k=k, v=v, attention_mask=mask, causal=True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        first = check_against_reference(_attention, _reference, inputs)["grads"]
        second = check_against_reference(_attention, _reference, inputs)["grads"]
    finally:
        torch.use_deterministic_algorithms(previous)
    for name in ("q", "k", "v"):
        assert torch.equal(first[name], second[name]), name


def test_uses_float32_log_sum_exp_for_large_scores():
    """Scores of several hundred overflow exp in any dtype; the online softmax must not."""
    q, k, v = _qkv(1, 18, 27, 1, 64, torch.float16)
    check_against_reference(_attention, _reference, dict(q=q * 6, k=k * 6, v=v))


def test_head_dim_and_dtype_limits_are_reasons():
    q, k, v = _qkv(1, 4, 4, 1, 160, torch.float32)
    with pytest.raises(ops.BackendNotSupportedError, match="head dim 160 exceeds 128"):
        ops.attention(q, k, v, backend="triton")
    q, k, v = _qkv(1, 4, 4, 1, 16, torch.float64)
    with pytest.raises(ops.BackendNotSupportedError, match="float64"):
        ops.attention(q, k, v, backend="triton")


def test_custom_ops_pass_opcheck():
    """Schemas, fake (meta) implementations and autograd registration agree with the real ops."""
    import semvlp.ops.backends.triton.attention  # noqa: F401  (registers the ops; the backend imports it lazily)

    q, k, v = _qkv(2, 9, 13, 2, 16, torch.float32)
    mask = _key_mask(2, 13)
    scale = 1.0 / math.sqrt(16)
    out, lse = torch.ops.semvlp.triton_attention_fwd(q, k, v, mask, None, None, 9, 13, scale, True, 0.2, 7, 3)
    torch.library.opcheck(torch.ops.semvlp.triton_attention_fwd,
                          (q, k, v, mask, None, None, 9, 13, scale, True, 0.2, 7, 3))
    torch.library.opcheck(torch.ops.semvlp.triton_attention_bwd,
                          (torch.randn_like(out), q, k, v, out, lse, mask, None, None, 9, 13, scale, True, 0.2, 7, 3,
                           False))
    inputs = _varlen([5, 0, 9], [3, 4, 9], 2, 16, torch.float32)
    torch.library.opcheck(torch.ops.semvlp.triton_attention_fwd,
                          (inputs["q"], inputs["k"], inputs["v"], None, inputs["cu_seqlens_q"], inputs["cu_seqlens_k"],
                           9, 9, scale, False, 0.0, 0, 0))
