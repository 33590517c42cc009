"""The CUDA attention kernels on a GPU: outputs and gradients against the reference (tolerance rule), awkward
lengths, dropout masks against the rng contract and the Triton backend, registration checks and tracing."""

from __future__ import annotations

import itertools

import pytest
import torch
from tolerances import GRAD_FACTOR, assert_within_rule

import semvlp
from semvlp import ops
from semvlp.ops import rng
from semvlp.ops.backends import reference
from semvlp.ops.backends.cuda import attention as cuda_attention
from semvlp.ops.backends.padding import causal_allowed

pytestmark = pytest.mark.gpu
DEVICE = "cuda"


def _cu(lengths) -> torch.Tensor:
    return torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=DEVICE)


def _visible(lens_q, lens_k, max_q, max_k, causal) -> torch.Tensor:
    """Bool (n_segments, 1, max_q, max_k): query and key inside their segments and (causal) visible."""
    lq, lk = torch.tensor(lens_q), torch.tensor(lens_k)
    inside = ((torch.arange(max_q)[None, :, None] < lq[:, None, None])
              & (torch.arange(max_k)[None, None, :] < lk[:, None, None]))[:, None]
    if causal:
        inside = inside & causal_allowed(max_q, max_k, "cpu", lk - lq)
    return inside


def test_cuda_backend_is_available():
    assert semvlp.backends()["cuda"] is None


LENGTHS = {
    "vl-self": ([1, 2, 37, 97, 130, 140, 64, 65], [1, 2, 37, 97, 130, 140, 64, 65]),
    "cross-20x36": ([20, 13, 1, 20, 7, 20], [36, 36, 0, 17, 36, 1]),  # an empty key segment
    "q-ne-k": ([0, 5, 130, 3], [4, 0, 129, 200]),  # empty query and key segments
    "near-cap": ([512, 300], [512, 511]),
}


@pytest.mark.parametrize("lengths", list(LENGTHS), ids=list(LENGTHS))
@pytest.mark.parametrize("dropout_p", [0.0, 0.17])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_varlen_attention_matches_reference(dtype, head_dim, causal, dropout_p, lengths):
    lens_q, lens_k = LENGTHS[lengths]
    nheads = 3
    gen = torch.Generator(device=DEVICE).manual_seed(head_dim + 7 * len(lens_q))
    q = torch.randn(sum(lens_q), nheads, head_dim, device=DEVICE, generator=gen).to(dtype)
    k, v = torch.randn(2, sum(lens_k), nheads, head_dim, device=DEVICE, generator=gen).to(dtype).unbind(0)
    cu_q, cu_k = _cu(lens_q), _cu(lens_k)
    max_q, max_k = max(lens_q), max(lens_k)
    torch.manual_seed(1234)
    seed, offset = rng.draw_seed_offset()  # the pair the cuda call below draws after the same manual_seed
    keep = None
    if dropout_p > 0:
        keep = rng.attention_keep_mask(seed, offset, dropout_p, len(lens_q), nheads, max_q, max_k).to(DEVICE)

    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    torch.manual_seed(1234)
    out = ops.varlen_attention(*leaves, cu_q, cu_k, max_q, max_k, dropout_p=dropout_p, causal=causal, backend="cuda")
    ref_leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    base_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    options = dict(causal=causal, dropout_p=dropout_p, dropout_mask=keep)
    ref = reference.varlen_attention(*ref_leaves, cu_q, cu_k, max_q, max_k, **options)
    base = reference.varlen_attention(*base_leaves, cu_q, cu_k, max_q, max_k, **options, upcast=False)
    assert_within_rule("out", out, ref, base)

    dout = torch.randn(q.shape, device=DEVICE, generator=gen).to(dtype)
    out.backward(dout)
    ref.backward(dout.float())
    base.backward(dout)
    for name, ours, r, b in zip(("dq", "dk", "dv"), leaves, ref_leaves, base_leaves):
        assert_within_rule(name, ours.grad, r.grad, b.grad, factor=GRAD_FACTOR)


def test_vision_language_batch_matches_reference():
    """The benchmark shape: 256 segments of up to 140 tokens, 12 heads of 64, bf16, dropout 0.1. The reference
    replays the kernel's own mask (the mask itself is checked against the contract below)."""
    gen = torch.Generator().manual_seed(0)
    lens = torch.randint(36, 141, (256,), generator=gen).tolist()
    q, k, v = torch.randn(3, sum(lens), 12, 64, device=DEVICE).bfloat16().unbind(0)
    cu = _cu(lens)
    torch.manual_seed(5)
    seed, offset = rng.draw_seed_offset()
    _, keep = cuda_attention.varlen_attention_with_keep_mask(q, k, v, cu, cu, 140, 140, dropout_p=0.1, seed=seed,
                                                             offset=offset, softmax_scale=0.125)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    torch.manual_seed(5)
    out = ops.varlen_attention(*leaves, cu, cu, 140, 140, dropout_p=0.1, backend="cuda")
    ref_leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    base_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = reference.varlen_attention(*ref_leaves, cu, cu, 140, 140, dropout_p=0.1, dropout_mask=keep)
    base = reference.varlen_attention(*base_leaves, cu, cu, 140, 140, dropout_p=0.1, dropout_mask=keep, upcast=False)
    assert_within_rule("out", out, ref, base)
    dout = torch.randn_like(q)
    for t, g in ((out, dout), (ref, dout.float()), (base, dout)):
        t.backward(g)
    for name, ours, r, b in zip(("dq", "dk", "dv"), leaves, ref_leaves, base_leaves):
        assert_within_rule(name, ours.grad, r.grad, b.grad, factor=GRAD_FACTOR)


@pytest.mark.parametrize("causal", [False, True])
def test_padded_attention_without_mask_matches_reference(causal):
    q = torch.randn(4, 20, 2, 64, device=DEVICE, dtype=torch.float16)
    k, v = torch.randn(2, 4, 36, 2, 64, device=DEVICE, dtype=torch.float16).unbind(0)
    out = ops.attention(q, k, v, causal=causal, backend="cuda")
    ref = reference.attention(q.float(), k.float(), v.float(), causal=causal)
    base = reference.attention(q, k, v, causal=causal, upcast=False)
    assert_within_rule("out", out, ref, base)


def test_non_default_softmax_scale_reaches_the_kernels():
    """0.4 against the default 1/sqrt(64) = 0.125, through the public op, outputs and gradients."""
    q = torch.randn(3, 20, 2, 64, device=DEVICE, dtype=torch.float16)
    k, v = torch.randn(2, 3, 36, 2, 64, device=DEVICE, dtype=torch.float16).unbind(0)
    mask = torch.ones(3, 36, dtype=torch.bool, device=DEVICE)
    mask[1, 30:] = False
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref_leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    base_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = ops.attention(*leaves, attention_mask=mask, softmax_scale=0.4, backend="cuda")
    ref = reference.attention(*ref_leaves, attention_mask=mask, softmax_scale=0.4)
    base = reference.attention(*base_leaves, attention_mask=mask, softmax_scale=0.4, upcast=False)
    assert_within_rule("out", out, ref, base)
    dout = torch.randn_like(q)
    for t, g in ((out, dout), (ref, dout.float()), (base, dout)):
        t.backward(g)
    for name, ours, r, b in zip(("dq", "dk", "dv"), leaves, ref_leaves, base_leaves):
        assert_within_rule(name, ours.grad, r.grad, b.grad, factor=GRAD_FACTOR)


def test_strided_and_misaligned_inputs():
    """q/k/v as views of a fused projection, and a view whose rows start off a 16-byte boundary."""
    lens = [50, 19]
    cu = _cu(lens)
    q, k, v = torch.randn(69, 3, 2, 64, device=DEVICE, dtype=torch.bfloat16).unbind(1)
    storage = torch.randn(69 * 2 * 64 + 1, device=DEVICE, dtype=torch.bfloat16)
    misaligned_v = storage[1:].view(69, 2, 64)
    for value in (v, misaligned_v):
        out = ops.varlen_attention(q, k, value, cu, cu, 50, 50, backend="cuda")
        ref = reference.varlen_attention(q.float(), k.float(), value.float(), cu, cu, 50, 50)
        base = reference.varlen_attention(q, k, value, cu, cu, 50, 50, upcast=False)
        assert_within_rule("out", out, ref, base)


def test_no_query_rows_and_no_keys():
    q = torch.randn(0, 2, 64, device=DEVICE, dtype=torch.float16, requires_grad=True)
    k = torch.randn(5, 2, 64, device=DEVICE, dtype=torch.float16, requires_grad=True)
    out = ops.varlen_attention(q, k, k, _cu([0]), _cu([5]), 0, 5, backend="cuda")
    out.sum().backward()
    assert out.shape == (0, 2, 64) and torch.equal(k.grad, torch.zeros_like(k))
    q = torch.randn(3, 2, 64, device=DEVICE, dtype=torch.float16, requires_grad=True)
    k = torch.randn(0, 2, 64, device=DEVICE, dtype=torch.float16, requires_grad=True)
    out = ops.varlen_attention(q, k, k, _cu([3]), _cu([0]), 3, 0, backend="cuda")
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.equal(q.grad, torch.zeros_like(q))


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_dropout_mask_follows_the_contract(causal):
    lens_q, lens_k = [20, 97, 1, 140], [36, 97, 5, 131]
    q = torch.randn(sum(lens_q), 4, 64, device=DEVICE, dtype=torch.bfloat16)
    k = torch.randn(sum(lens_k), 4, 64, device=DEVICE, dtype=torch.bfloat16)
    seed, offset = 2**61 + 99, 2**32 - 5
    _, mask = cuda_attention.varlen_attention_with_keep_mask(
        q, k, k, _cu(lens_q), _cu(lens_k), 140, 140, dropout_p=0.3, seed=seed, offset=offset,
        softmax_scale=0.125, causal=causal)
    expected = rng.attention_keep_mask(seed, offset, 0.3, 4, 4, 140, 140)
    visible = _visible(lens_q, lens_k, 140, 140, causal).expand(-1, 4, -1, -1)
    assert torch.equal(mask.cpu()[visible], expected[visible])


def _mask_through_values(backend: str, lens, dropout_p: float, torch_seed: int) -> torch.Tensor:
    """The keep mask a backend applies, read off its output: with q = 0 every key gets probability 1/len_k and
    v[j] = e_j, so out[i, h, j] = keep[i, j] / (len_k * (1 - p)). Needs len_k <= head_dim (128)."""
    total, nheads, head_dim = sum(lens), 2, 128
    q = torch.zeros(total, nheads, head_dim, device=DEVICE, dtype=torch.float16)
    v = torch.zeros(total, nheads, head_dim, device=DEVICE, dtype=torch.float16)
    starts = [0, *itertools.accumulate(lens)][:-1]
    for start, length in zip(starts, lens):
        v[start:start + length, :, :length] = torch.eye(length, device=DEVICE, dtype=torch.float16)[:, None, :]
    torch.manual_seed(torch_seed)
    out = ops.varlen_attention(q, v, v, _cu(lens), _cu(lens), max(lens), max(lens), dropout_p=dropout_p,
                               backend=backend)
    masks = []
    for start, length in zip(starts, lens):
        masks.append((out[start:start + length, :, :length].float() > 0.5 / (length * (1 - dropout_p))).cpu())
    return masks


def test_applied_dropout_mask_is_the_contract_mask():
    lens, p = [7, 128, 1, 97], 0.25
    torch.manual_seed(11)
    seed, offset = rng.draw_seed_offset()
    expected = rng.attention_keep_mask(seed, offset, p, len(lens), 2, 128, 128)
    for s, (length, got) in enumerate(zip(lens, _mask_through_values("cuda", lens, p, 11))):
        assert torch.equal(got, expected[s, :, :length, :length].permute(1, 0, 2)), f"segment {s}"


def test_same_dropout_mask_as_triton():
    if "triton" not in semvlp.backends() or semvlp.backends()["triton"] is not None:
        pytest.skip(f"triton backend: {semvlp.backends().get('triton', 'not registered')}")
    lens, p = [7, 128, 1, 97], 0.25
    for ours, theirs in zip(_mask_through_values("cuda", lens, p, 3), _mask_through_values("triton", lens, p, 3)):
        assert torch.equal(ours, theirs)


def _fwd_args(dtype=torch.float16, dropout_p=0.1):
    q = torch.randn(30, 2, 64, device=DEVICE, dtype=dtype)
    k = torch.randn(40, 2, 64, device=DEVICE, dtype=dtype)
    return (q, k, k.clone(), _cu([10, 20]), _cu([25, 15]), 20, 25, 0.125, False, dropout_p, 17, 23, False)


def test_registered_ops_pass_opcheck():
    fwd = torch.ops.semvlp.cuda_varlen_attention_fwd.default
    torch.library.opcheck(fwd, _fwd_args())
    q, k, v, cu_q, cu_k, max_q, max_k, scale, causal, p, seed, offset, _ = _fwd_args()
    out, lse, _ = fwd(*_fwd_args())
    torch.library.opcheck(torch.ops.semvlp.cuda_varlen_attention_bwd.default,
                          (torch.randn_like(out), q, k, v, out, lse, cu_q, cu_k, max_q, max_k, scale, causal, p, seed,
                           offset))


def test_compiles_with_torch_compile():
    cu = _cu([10, 20])

    def loss(q, k, v):
        out = cuda_attention.varlen_attention(q, k, v, cu, cu, 20, 20, softmax_scale=0.125, causal=True)
        return out.float().square().sum()

    q, k, v = (torch.randn(30, 2, 64, device=DEVICE, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    eager = torch.autograd.grad(loss(q, k, v), (q, k, v))
    # The compiled graph's backward (aot_autograd) calls the registered backward op.
    compiled = torch.autograd.grad(torch.compile(loss, backend="aot_eager", fullgraph=True)(q, k, v), (q, k, v))
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e)  # dq sums with float atomics: equal up to rounding
