"""The attention reference against independent computations: SDPA, per-segment loops, float64 gradcheck."""

import math

import pytest
import torch
import torch.nn.functional as F

from semvlp.ops.backends import reference
from tolerances import FP32_ATOL, FP64_ATOL

SHAPES = [  # batch, seqlen_q, seqlen_k, nheads, headdim
    (1, 1, 1, 1, 16),
    (2, 7, 13, 3, 40),
    (3, 13, 7, 2, 64),
    (2, 31, 31, 4, 80),
    (1, 97, 5, 1, 16),
]


def _qkv(batch, seqlen_q, seqlen_k, nheads, headdim, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda s: torch.randn(batch, s, nheads, headdim, generator=g, dtype=dtype)  # noqa: E731
    return make(seqlen_q), make(seqlen_k), make(seqlen_k)


def _sdpa(q, k, v, allowed=None, scale=None):
    """SDPA in (batch, seqlen, heads, dim) layout; `allowed` (batch, 1, sq, sk) bool."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=allowed, scale=scale)
    return out.transpose(1, 2)


def _padding_mask(batch, seqlen_k, seed=1):
    """Random key padding with the last sample entirely padding and the first entirely real."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, seqlen_k, generator=g) > 0.4
    mask[0] = True
    if batch > 1:
        mask[-1] = False
    return mask


@pytest.mark.parametrize("shape", SHAPES)
def test_unmasked_matches_sdpa(shape):
    q, k, v = _qkv(*shape)
    torch.testing.assert_close(reference.attention(q, k, v), _sdpa(q, k, v), atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_scale_matches_sdpa(shape):
    q, k, v = _qkv(*shape)
    torch.testing.assert_close(reference.attention(q, k, v, softmax_scale=0.3), _sdpa(q, k, v, scale=0.3),
                               atol=FP32_ATOL, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_key_padding_matches_sdpa_and_empty_rows_are_zero(shape):
    batch, sq, sk, _, _ = shape
    q, k, v = _qkv(*shape)
    mask = _padding_mask(batch, sk)
    out = reference.attention(q, k, v, attention_mask=mask)
    has_key = mask.any(dim=1)
    expected = _sdpa(q[has_key], k[has_key], v[has_key], mask[has_key][:, None, None, :])
    torch.testing.assert_close(out[has_key], expected, atol=FP32_ATOL, rtol=0)
    assert torch.all(out[~has_key] == 0)


@pytest.mark.parametrize("shape", SHAPES)
def test_causal_is_bottom_right_aligned(shape):
    batch, sq, sk, _, _ = shape
    q, k, v = _qkv(*shape)
    # Built element by element, independently of the reference's vectorised mask.
    allowed = torch.tensor([[j <= i + sk - sq for j in range(sk)] for i in range(sq)])
    out = reference.attention(q, k, v, causal=True)
    rows = allowed.any(dim=1)
    expected = _sdpa(q[:, rows], k, v, allowed[rows][None, None])
    torch.testing.assert_close(out[:, rows], expected, atol=FP32_ATOL, rtol=0)
    assert torch.all(out[:, ~rows] == 0)


def test_all_padding_rows_have_zero_gradients_and_no_nan():
    q, k, v = (t.requires_grad_() for t in _qkv(3, 5, 6, 2, 16))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1] = False
    out = reference.attention(q, k, v, attention_mask=mask)
    out.square().sum().backward()
    for name, t in (("q", q), ("k", k), ("v", v)):
        assert torch.isfinite(t.grad).all(), name
        assert torch.all(t.grad[1] == 0), name
        assert t.grad[0].abs().sum() > 0, name


def test_gradcheck_float64_with_mask_and_causal():
    q, k, v = (t.requires_grad_() for t in _qkv(2, 4, 5, 2, 8, dtype=torch.float64))
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    fn = lambda q, k, v: reference.attention(q, k, v, attention_mask=mask, causal=True, upcast=False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), atol=1e-8)


def test_float64_matches_sdpa_without_upcast():
    q, k, v = _qkv(2, 9, 11, 3, 16, dtype=torch.float64)
    out = reference.attention(q, k, v, upcast=False)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _sdpa(q, k, v), atol=FP64_ATOL, rtol=0)


def test_dropout_mask_is_applied_to_probabilities():
    q, k, v = _qkv(2, 3, 4, 2, 8)
    keep = torch.rand(2, 2, 3, 4) > 0.3
    out = reference.attention(q, k, v, dropout_p=0.3, dropout_mask=keep)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8)
    probs = torch.softmax(scores, dim=-1) * keep / 0.7
    expected = torch.einsum("bhqk,bkhd->bqhd", probs, v)
    torch.testing.assert_close(out, expected, atol=FP32_ATOL, rtol=0)


def test_dropout_without_mask_follows_the_default_generator():
    q, k, v = _qkv(2, 16, 16, 2, 8)
    torch.manual_seed(3)
    a = reference.attention(q, k, v, dropout_p=0.5)
    torch.manual_seed(3)
    b = reference.attention(q, k, v, dropout_p=0.5)
    c = reference.attention(q, k, v, dropout_p=0.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _random_segments(lengths_q, lengths_k, nheads=2, headdim=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(sum(lengths_q), nheads, headdim, generator=g, dtype=dtype)
    k = torch.randn(sum(lengths_k), nheads, headdim, generator=g, dtype=dtype)
    v = torch.randn(sum(lengths_k), nheads, headdim, generator=g, dtype=dtype)
    cu = lambda ls: torch.tensor([0] + list(torch.tensor(ls).cumsum(0)), dtype=torch.int32)  # noqa: E731
    return q, k, v, cu(lengths_q), cu(lengths_k)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_equals_attention_per_segment(causal):
    lengths_q, lengths_k = [1, 7, 0, 13, 5], [3, 7, 4, 2, 0]
    q, k, v, cu_q, cu_k = _random_segments(lengths_q, lengths_k)
    out = reference.varlen_attention(q, k, v, cu_q, cu_k, max(lengths_q), max(lengths_k), causal=causal)
    for s, (lq, lk) in enumerate(zip(lengths_q, lengths_k)):
        rows = slice(int(cu_q[s]), int(cu_q[s + 1]))
        keys = slice(int(cu_k[s]), int(cu_k[s + 1]))
        expected = reference.attention(q[rows][None], k[keys][None], v[keys][None], causal=causal)[0]
        torch.testing.assert_close(out[rows], expected, atol=FP32_ATOL, rtol=0)
        if lk == 0:
            assert torch.all(out[rows] == 0)


def test_varlen_with_larger_max_seqlen_changes_nothing():
    q, k, v, cu_q, cu_k = _random_segments([4, 9], [6, 2])
    tight = reference.varlen_attention(q, k, v, cu_q, cu_k, 9, 6)
    loose = reference.varlen_attention(q, k, v, cu_q, cu_k, 17, 11)
    torch.testing.assert_close(tight, loose, atol=FP32_ATOL, rtol=0)


def test_varlen_gradcheck_float64_with_empty_segment():
    q, k, v, cu_q, cu_k = _random_segments([2, 3, 1], [3, 0, 2], nheads=1, headdim=4, dtype=torch.float64)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    fn = lambda q, k, v: reference.varlen_attention(q, k, v, cu_q, cu_k, 3, 3, causal=True, upcast=False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), atol=1e-8)


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_varlen_equals_padded_attention_with_key_padding(backend):
    from semvlp import ops

    q, k, v = _qkv(3, 9, 9, 2, 16)
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] * 1 + [0] * 8], dtype=torch.bool)
    padded = ops.attention(q, k, v, attention_mask=mask, backend=backend)
    cu = torch.tensor([0, 9, 13, 14], dtype=torch.int32)
    packed = ops.varlen_attention(q[mask], k[mask], v[mask], cu, cu, 9, 9, backend=backend)
    torch.testing.assert_close(packed, padded[mask], atol=FP32_ATOL, rtol=0)


def test_float64_is_computed_in_float64_by_default():
    """The oracle's default upcast never takes float64 down to float32."""
    q, k, v = _qkv(2, 9, 11, 3, 16, dtype=torch.float64)
    expected = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    assert (reference.attention(q, k, v) - expected).abs().max() <= 1e-12
