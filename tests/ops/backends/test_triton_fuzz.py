"""Property-based fuzz of the Triton backend against the reference (outputs and gradients, tolerance rule)
over shapes, key-padding masks, packed segments, head dims, dtypes, causal and dropout. Bounded for CI by
max_examples and a per-example deadline, and derandomized so that CI draws the same examples every run."""

from datetime import timedelta

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semvlp import ops
from semvlp.ops import rng
from semvlp.ops.backends import reference
from triton_compare import check_against_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])
HEAD_DIMS = st.sampled_from([8, 16, 24, 40, 64, 80, 96, 128])
BOUNDED = settings(max_examples=8, deadline=timedelta(seconds=30), derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow], database=None)


def _randn(shape, dtype, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)


def _with_replayed_dropout(call, p, torch_seed):
    """Runs `call` right after torch.manual_seed so its dropout draws the (seed, offset) the test replays."""
    def run(**kw):
        torch.manual_seed(torch_seed)
        return call(**kw)
    return run


@BOUNDED
@given(batch=st.integers(1, 3), seqlen_q=st.integers(1, 70), seqlen_k=st.integers(0, 70), nheads=st.integers(1, 2),
       head_dim=HEAD_DIMS, dtype=DTYPES, causal=st.booleans(), padded=st.booleans(),
       dropout_p=st.sampled_from([0.0, 0.0, 0.3]), seed=st.integers(0, 2**16))
def test_padded_attention(batch, seqlen_q, seqlen_k, nheads, head_dim, dtype, causal, padded, dropout_p, seed):
    q = _randn((batch, seqlen_q, nheads, head_dim), dtype, seed)
    k = _randn((batch, seqlen_k, nheads, head_dim), dtype, seed + 1)
    v = _randn((batch, seqlen_k, nheads, head_dim), dtype, seed + 2)
    mask = None
    if padded:
        mask = (torch.rand(batch, seqlen_k, generator=torch.Generator().manual_seed(seed)) > 0.4).to(DEVICE)
    torch.manual_seed(seed)
    drawn = rng.draw_seed_offset()
    keep = rng.attention_keep_mask(*drawn, dropout_p, batch, nheads, seqlen_q, seqlen_k).to(DEVICE)
    backend = _with_replayed_dropout(
        lambda **kw: ops.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), backend="triton", **kw), dropout_p, seed)
    oracle = lambda **kw: reference.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), dropout_mask=keep, **kw)  # noqa: E731
    check_against_reference(backend, oracle, dict(q=q, k=k, v=v, attention_mask=mask, causal=causal,
                                                  dropout_p=dropout_p))


@BOUNDED
@given(lengths=st.lists(st.tuples(st.integers(0, 45), st.integers(0, 45)), min_size=1, max_size=5),
       nheads=st.integers(1, 3), head_dim=HEAD_DIMS, dtype=DTYPES, causal=st.booleans(), seed=st.integers(0, 2**16))
def test_varlen_attention(lengths, nheads, head_dim, dtype, causal, seed):
    lengths_q, lengths_k = [q for q, _ in lengths], [k for _, k in lengths]
    cu_q = torch.tensor([0] + lengths_q).cumsum(0).to(DEVICE, torch.int32)
    cu_k = torch.tensor([0] + lengths_k).cumsum(0).to(DEVICE, torch.int32)
    inputs = dict(q=_randn((sum(lengths_q), nheads, head_dim), dtype, seed),
                  k=_randn((sum(lengths_k), nheads, head_dim), dtype, seed + 1),
                  v=_randn((sum(lengths_k), nheads, head_dim), dtype, seed + 2),
                  cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(lengths_q), max_seqlen_k=max(lengths_k),
                  causal=causal)
    check_against_reference(lambda **kw: ops.varlen_attention(**kw, backend="triton"), reference.varlen_attention,
                            inputs)


@BOUNDED
@given(rows=st.integers(0, 40), hidden=st.integers(1, 1100), dtype=DTYPES, affine=st.booleans(),
       x_bias=st.booleans(), prenorm=st.booleans(), dropout_p=st.sampled_from([0.0, 0.2]), seed=st.integers(0, 2**16))
def test_add_layer_norm(rows, hidden, dtype, affine, x_bias, prenorm, dropout_p, seed):
    torch.manual_seed(seed)
    keep = rng.rowwise_keep_mask(*rng.draw_seed_offset(), dropout_p, rows, hidden).to(DEVICE)
    inputs = dict(x=_randn((rows, hidden), dtype, seed), residual=_randn((rows, hidden), dtype, seed + 1),
                  weight=_randn(hidden, dtype, seed + 2) if affine else None,
                  bias=_randn(hidden, dtype, seed + 3) if affine else None,
                  x_bias=_randn(hidden, dtype, seed + 4) if x_bias else None,
                  dropout_p=dropout_p, eps=1e-5, prenorm=prenorm)
    backend = _with_replayed_dropout(lambda **kw: ops.add_layer_norm(**kw, backend="triton"), dropout_p, seed)
    check_against_reference(backend, lambda **kw: reference.add_layer_norm(**kw, dropout_mask=keep), inputs)


@BOUNDED
@given(shape=st.lists(st.integers(1, 70), min_size=1, max_size=3), dtype=DTYPES,
       approximate=st.sampled_from(["none", "tanh"]), seed=st.integers(0, 2**16))
def test_bias_gelu(shape, dtype, approximate, seed):
    inputs = dict(x=3 * _randn(shape, dtype, seed), bias=_randn(shape[-1], dtype, seed + 1), approximate=approximate)
    check_against_reference(lambda **kw: ops.bias_gelu(**kw, backend="triton"), reference.bias_gelu, inputs)
