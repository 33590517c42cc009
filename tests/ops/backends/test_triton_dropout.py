"""Dropout in the Triton kernels follows the RNG contract of semvlp.ops.rng: the kernels' masks equal the CPU
reference mask for mask, outputs and gradients equal the reference given that mask, the keep rate is right,
and torch.manual_seed makes runs reproducible."""

import math

import pytest
import torch

from semvlp import ops
from semvlp.ops import rng
from semvlp.ops.backends import reference
from tolerances import KEEP_RATE_SIGMAS
from triton_compare import check_against_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SEED_OFFSETS = [(0, 0), (123456789, 2**31 + 17), (2**62 - 1, 2**32 - 1)]


@pytest.mark.parametrize("seed,offset", SEED_OFFSETS)
def test_attention_kernel_mask_equals_reference_mask(seed, offset):
    from semvlp.ops.backends.triton.attention import attention_keep_mask

    kernel_mask = attention_keep_mask(seed, offset, 0.3, 3, 2, 37, 45, DEVICE).cpu()
    assert torch.equal(kernel_mask, rng.attention_keep_mask(seed, offset, 0.3, 3, 2, 37, 45))


@pytest.mark.parametrize("seed,offset", SEED_OFFSETS)
def test_layer_norm_kernel_mask_equals_reference_mask(seed, offset):
    from semvlp.ops.backends.triton.layer_norm import rowwise_keep_mask

    kernel_mask = rowwise_keep_mask(seed, offset, 0.3, 29, 97, DEVICE).cpu()
    assert torch.equal(kernel_mask, rng.rowwise_keep_mask(seed, offset, 0.3, 29, 97))


def _assert_keep_rate(mask: torch.Tensor, p: float) -> None:
    n = mask.numel()
    bound = KEEP_RATE_SIGMAS * math.sqrt(p * (1 - p) / n)
    rate = mask.float().mean().item()
    assert abs(rate - (1 - p)) <= bound, f"keep rate {rate:.4f}, expected {1 - p:.4f} +- {bound:.4f}"


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_within_statistical_bounds(p):
    from semvlp.ops.backends.triton.attention import attention_keep_mask
    from semvlp.ops.backends.triton.layer_norm import rowwise_keep_mask

    _assert_keep_rate(attention_keep_mask(99, 5, p, 4, 3, 64, 67, DEVICE), p)
    _assert_keep_rate(rowwise_keep_mask(99, 5, p, 211, 130, DEVICE), p)


def _drawn_pair(torch_seed: int) -> tuple[int, int]:
    """The (seed, offset) that a dropout call right after torch.manual_seed(torch_seed) draws."""
    torch.manual_seed(torch_seed)
    return rng.draw_seed_offset()


def _qkv(shape_q, shape_k, dtype):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen).to(DEVICE, dtype) for s in (shape_q, shape_k, shape_k)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_padded_attention_dropout_matches_reference_with_kernel_mask(dtype):
    p, torch_seed = 0.3, 11
    q, k, v = _qkv((2, 37, 3, 40), (2, 45, 3, 40), dtype)
    key_mask = torch.rand(2, 45, generator=torch.Generator().manual_seed(1)).to(DEVICE) > 0.3
    seed, offset = _drawn_pair(torch_seed)
    keep = rng.attention_keep_mask(seed, offset, p, 2, 3, 37, 45).to(DEVICE)

    def backend(**kw):
        torch.manual_seed(torch_seed)
        return ops.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), backend="triton", **kw)

    def oracle(**kw):
        return reference.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), dropout_mask=keep, **kw)

    check_against_reference(backend, oracle, dict(q=q, k=k, v=v, attention_mask=key_mask, dropout_p=p, causal=True))


def test_varlen_attention_dropout_matches_reference_with_kernel_mask():
    p, torch_seed = 0.2, 5
    lengths_q, lengths_k = [13, 0, 40, 1], [29, 7, 33, 1]
    cu_q = torch.tensor([0] + lengths_q).cumsum(0).to(DEVICE, torch.int32)
    cu_k = torch.tensor([0] + lengths_k).cumsum(0).to(DEVICE, torch.int32)
    q, k, v = _qkv((sum(lengths_q), 2, 24), (sum(lengths_k), 2, 24), torch.float16)
    seed, offset = _drawn_pair(torch_seed)
    keep = rng.attention_keep_mask(seed, offset, p, 4, 2, 40, 33).to(DEVICE)

    def backend(**kw):
        torch.manual_seed(torch_seed)
        return ops.varlen_attention(**kw, backend="triton")

    check_against_reference(backend, lambda **kw: reference.varlen_attention(**kw, dropout_mask=keep),
                            dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=40,
                                 max_seqlen_k=33, dropout_p=p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_add_layer_norm_dropout_matches_reference_with_kernel_mask(dtype):
    p, torch_seed = 0.25, 3
    gen = torch.Generator().manual_seed(0)
    x, residual = (torch.randn(3, 7, 130, generator=gen).to(DEVICE, dtype) for _ in range(2))
    weight, bias, x_bias = (torch.randn(130, generator=gen).to(DEVICE) for _ in range(3))
    seed, offset = _drawn_pair(torch_seed)
    keep = rng.rowwise_keep_mask(seed, offset, p, 21, 130).view(3, 7, 130).to(DEVICE)

    def backend(**kw):
        torch.manual_seed(torch_seed)
        return ops.add_layer_norm(**kw, backend="triton")

    check_against_reference(backend, lambda **kw: reference.add_layer_norm(**kw, dropout_mask=keep),
                            dict(x=x, residual=residual, weight=weight, bias=bias, x_bias=x_bias.to(dtype),
                                 dropout_p=p, eps=1e-5, prenorm=True))


def test_same_seed_same_result_other_seed_different():
    q, k, v = _qkv((2, 21, 2, 32), (2, 21, 2, 32), torch.float32)
    x = torch.randn(9, 64).to(DEVICE)

    def run(torch_seed):
        torch.manual_seed(torch_seed)
        return (ops.attention(q, k, v, dropout_p=0.5, backend="triton"),
                ops.add_layer_norm(x, x, None, None, dropout_p=0.5, backend="triton"))

    first, again, other = run(1), run(1), run(2)
    for a, b, c in zip(first, again, other):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
