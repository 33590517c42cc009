"""The Triton backend on a real GPU at real sizes: the same matrix as the interpreter tests (dtypes, head dims,
padding, q != k, packed segments, causal, dropout, deterministic backward), plus the autotuned path and
torch.compile. Skipped without CUDA; run by bench/gpu_check.sh (with SEMVLP_TRITON_AUTOTUNE=0 except where a
test turns autotuning on)."""

import pytest
import torch

from semvlp import ops
from semvlp.ops import rng
from semvlp.ops.backends import reference
from triton_compare import check_against_reference

pytestmark = pytest.mark.gpu
DTYPES = [torch.float16, torch.bfloat16]


def _randn(shape, dtype, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to("cuda", dtype)


def _padding_mask(batch, seqlen, fraction=0.25, seed=0):
    """About `fraction` of each row is trailing padding, like a padded vision-language batch."""
    gen = torch.Generator().manual_seed(seed)
    lengths = seqlen - (torch.rand(batch, generator=gen) * 2 * fraction * seqlen).long().clamp(max=seqlen - 1)
    return (torch.arange(seqlen)[None, :] < lengths[:, None]).cuda()


def _attention(**kw):
    return ops.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), backend="triton", **kw)


def _reference(**kw):
    return reference.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), **kw)


# (batch, seqlen_q, seqlen_k, nheads, head_dim, padded, causal)
PADDED = [
    (32, 140, 140, 12, 64, True, False),  # joint text+regions, 25% padding
    (64, 20, 36, 12, 64, False, False),  # text -> regions cross-attention
    (64, 36, 20, 12, 64, False, False),  # regions -> text
    (8, 197, 203, 4, 40, True, True),
    (8, 130, 97, 4, 80, True, False),
    (4, 257, 257, 4, 96, False, True),
    (2, 1024, 1024, 4, 128, False, True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", PADDED, ids=lambda c: "b{}_q{}_k{}_h{}_d{}_mask{:d}_causal{:d}".format(*c))
def test_padded_attention(case, dtype):
    batch, seqlen_q, seqlen_k, nheads, head_dim, padded, causal = case
    inputs = dict(q=_randn((batch, seqlen_q, nheads, head_dim), dtype, 0),
                  k=_randn((batch, seqlen_k, nheads, head_dim), dtype, 1),
                  v=_randn((batch, seqlen_k, nheads, head_dim), dtype, 2),
                  attention_mask=_padding_mask(batch, seqlen_k) if padded else None, causal=causal)
    check_against_reference(_attention, _reference, inputs)


def test_float32_attention():
    inputs = dict(q=_randn((4, 77, 4, 64), torch.float32, 0), k=_randn((4, 91, 4, 64), torch.float32, 1),
                  v=_randn((4, 91, 4, 64), torch.float32, 2), attention_mask=_padding_mask(4, 91), causal=True)
    check_against_reference(_attention, _reference, inputs)


def _packed(lengths_q, lengths_k, nheads, head_dim, dtype):
    cu_q = torch.tensor([0] + lengths_q).cumsum(0).to("cuda", torch.int32)
    cu_k = torch.tensor([0] + lengths_k).cumsum(0).to("cuda", torch.int32)
    return dict(q=_randn((sum(lengths_q), nheads, head_dim), dtype, 0),
                k=_randn((sum(lengths_k), nheads, head_dim), dtype, 1),
                v=_randn((sum(lengths_k), nheads, head_dim), dtype, 2), cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                max_seqlen_q=max(lengths_q), max_seqlen_k=max(lengths_k))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_packed_self_and_cross_attention(dtype, causal):
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(5, 40, (64,), generator=gen).tolist()
    regions = torch.randint(10, 101, (64,), generator=gen).tolist()
    text[3], regions[5] = 0, 0  # an empty text and an image without regions
    joint = [t + r for t, r in zip(text, regions)]
    for lengths_q, lengths_k in ((joint, joint), (text, regions), (regions, text)):
        check_against_reference(lambda **kw: ops.varlen_attention(**kw, backend="triton"),
                                reference.varlen_attention, dict(_packed(lengths_q, lengths_k, 12, 64, dtype),
                                                                 causal=causal))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dropout_masks_outputs_and_gradients(dtype):
    from semvlp.ops.backends.triton.attention import attention_keep_mask

    batch, seqlen, nheads, p = 16, 140, 12, 0.1
    torch.manual_seed(7)
    seed, offset = rng.draw_seed_offset()
    keep = rng.attention_keep_mask(seed, offset, p, batch, nheads, seqlen, seqlen)
    assert torch.equal(attention_keep_mask(seed, offset, p, batch, nheads, seqlen, seqlen, "cuda").cpu(), keep)

    def backend(**kw):
        torch.manual_seed(7)
        return _attention(**kw)

    inputs = dict(q=_randn((batch, seqlen, nheads, 64), dtype, 0), k=_randn((batch, seqlen, nheads, 64), dtype, 1),
                  v=_randn((batch, seqlen, nheads, 64), dtype, 2), attention_mask=_padding_mask(batch, seqlen),
                  dropout_p=p)
    check_against_reference(backend, lambda **kw: _reference(**kw, dropout_mask=keep.cuda()), inputs)


def test_deterministic_backward_repeats_bitwise():
    inputs = dict(q=_randn((32, 140, 12, 64), torch.bfloat16, 0), k=_randn((32, 140, 12, 64), torch.bfloat16, 1),
                  v=_randn((32, 140, 12, 64), torch.bfloat16, 2))
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        runs = [check_against_reference(_attention, _reference, inputs)["grads"] for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(previous)
    for name in ("q", "k", "v"):
        assert torch.equal(runs[0][name], runs[1][name]), name


def test_autotuned_path(monkeypatch):
    monkeypatch.setenv("SEMVLP_TRITON_AUTOTUNE", "1")
    inputs = dict(q=_randn((64, 140, 12, 64), torch.bfloat16, 0), k=_randn((64, 140, 12, 64), torch.bfloat16, 1),
                  v=_randn((64, 140, 12, 64), torch.bfloat16, 2), attention_mask=_padding_mask(64, 140))
    check_against_reference(_attention, _reference, inputs)


def test_torch_compile_traces_the_custom_ops():
    q, k, v = (_randn((8, 140, 12, 64), torch.bfloat16, s).requires_grad_() for s in range(3))
    mask = _padding_mask(8, 140)
    x = _randn((8, 140, 768), torch.bfloat16, 3)
    weight, bias = torch.ones(768, device="cuda"), torch.zeros(768, device="cuda")

    def block(q, k, v):
        context = ops.attention(q, k, v, attention_mask=mask, backend="triton").reshape(8, 140, 768)
        return ops.add_layer_norm(context, x, weight, bias, backend="triton")

    eager = block(q, k, v)
    compiled = torch.compile(block)(q, k, v)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    compiled.float().sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32] + DTYPES, ids=str)
@pytest.mark.parametrize("hidden", [768, 1024, 4096, 8192])
def test_add_layer_norm(hidden, dtype):
    rows, p = 4096, 0.1
    torch.manual_seed(3)
    keep = rng.rowwise_keep_mask(*rng.draw_seed_offset(), p, rows, hidden).cuda()

    def backend(**kw):
        torch.manual_seed(3)
        return ops.add_layer_norm(**kw, backend="triton")

    inputs = dict(x=_randn((rows, hidden), dtype, 0), residual=_randn((rows, hidden), dtype, 1),
                  weight=_randn(hidden, torch.float32, 2), bias=_randn(hidden, torch.float32, 3),
                  x_bias=_randn(hidden, dtype, 4), dropout_p=p, eps=1e-12, prenorm=True)
    check_against_reference(backend, lambda **kw: reference.add_layer_norm(**kw, dropout_mask=keep), inputs)


@pytest.mark.parametrize("dtype", [torch.float32] + DTYPES, ids=str)
def test_layer_norm(dtype):
    check_against_reference(lambda **kw: ops.layer_norm(**kw, backend="triton"), reference.layer_norm,
                            dict(x=_randn((8192, 768), dtype, 0), weight=_randn(768, dtype, 1),
                                 bias=_randn(768, dtype, 2), eps=1e-12))


@pytest.mark.parametrize("dtype", [torch.float32] + DTYPES, ids=str)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_bias_gelu(approximate, dtype):
    check_against_reference(lambda **kw: ops.bias_gelu(**kw, backend="triton"), reference.bias_gelu,
                            dict(x=_randn((8192, 3072), dtype, 0), bias=_randn(3072, dtype, 1),
                                 approximate=approximate))
