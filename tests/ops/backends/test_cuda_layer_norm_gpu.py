"""The CUDA add_layer_norm / layer_norm kernels on a GPU: outputs and every gradient against the reference
(tolerance rule), the dropout mask against the rng contract and the Triton backend, opcheck."""

from __future__ import annotations

import pytest
import torch
from tolerances import GRAD_FACTOR, assert_within_rule

import semvlp
from semvlp import ops
from semvlp.ops import rng
from semvlp.ops.backends import reference
from semvlp.ops.backends.cuda import layer_norm as cuda_layer_norm

pytestmark = pytest.mark.gpu
DEVICE = "cuda"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["fp32", "fp16", "bf16"]
# The oracle's precision: fp32 for 16-bit inputs, fp64 for fp32 ones (so PyTorch's own fp32 is a real baseline).
ORACLE = {torch.float32: torch.float64, torch.float16: torch.float32, torch.bfloat16: torch.float32}


def _leaf(t, dtype=None):
    return None if t is None else t.detach().to(dtype or t.dtype).requires_grad_()


@pytest.mark.parametrize("hidden", [1, 33, 768, 1000, 1024, 2049, 8192])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("dropout_p,prenorm,with_x_bias", [(0.0, False, True), (0.1, True, True), (0.1, False, False)])
def test_add_layer_norm_matches_reference(hidden, dtype, dropout_p, prenorm, with_x_bias):
    gen = torch.Generator(device=DEVICE).manual_seed(hidden)
    shape = (3, 37, hidden)  # rows = 111, flattened from a (batch, seq, hidden) activation

    def randn(*size, dt=dtype):
        return torch.randn(*size, device=DEVICE, generator=gen).to(dt)

    x, residual = randn(*shape), randn(*shape)
    weight, bias = 1 + randn(hidden, dt=torch.float32), randn(hidden, dt=torch.float32)  # fp32 params, as under autocast
    x_bias = randn(hidden) if with_x_bias else None
    torch.manual_seed(77)
    seed, offset = rng.draw_seed_offset()
    keep = rng.rowwise_keep_mask(seed, offset, dropout_p, 111, hidden).view(shape).to(DEVICE) if dropout_p else None

    inputs = (x, residual, weight, bias, x_bias)
    oracle = ORACLE[dtype]
    ours, ref_leaves, base_leaves = ([_leaf(t) for t in inputs], [_leaf(t, oracle) for t in inputs],
                                     [_leaf(t) for t in inputs])
    torch.manual_seed(77)
    got = ops.add_layer_norm(*ours[:4], x_bias=ours[4], dropout_p=dropout_p, eps=1e-5, prenorm=prenorm, backend="cuda")
    options = dict(dropout_p=dropout_p, eps=1e-5, prenorm=prenorm, dropout_mask=keep)
    ref = reference.add_layer_norm(*ref_leaves[:4], x_bias=ref_leaves[4], **options, upcast=False)
    base = reference.add_layer_norm(*base_leaves[:4], x_bias=base_leaves[4], **options, upcast=False)
    got, ref, base = ((t,) if not prenorm else t for t in (got, ref, base))
    for name, g, r, b in zip(("out", "prenorm_sum"), got, ref, base):
        assert_within_rule(name, g, r, b)

    grads_out = [randn(*shape) for _ in got]
    torch.autograd.backward(got, grads_out)
    torch.autograd.backward(ref, [g.to(oracle) for g in grads_out])
    torch.autograd.backward(base, grads_out)
    for name, o, r, b in zip(("dx", "dresidual", "dweight", "dbias", "dx_bias"), ours, ref_leaves, base_leaves):
        if o is None:
            continue
        assert o.grad.dtype == o.dtype, f"{name}: gradient dtype {o.grad.dtype}, expected {o.dtype}"
        assert_within_rule(name, o.grad, r.grad, b.grad, factor=GRAD_FACTOR)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_layer_norm_matches_reference(dtype):
    x = torch.randn(50, 768, device=DEVICE).to(dtype)
    weight = torch.randn(768, device=DEVICE).to(dtype)
    bias = torch.randn(768, device=DEVICE).to(dtype)
    ours, refs, bases = ([_leaf(t) for t in (x, weight, bias)], [_leaf(t, ORACLE[dtype]) for t in (x, weight, bias)],
                         [_leaf(t) for t in (x, weight, bias)])
    got = ops.layer_norm(*ours, eps=1e-5, backend="cuda")
    ref = reference.layer_norm(*refs, eps=1e-5, upcast=False)
    base = reference.layer_norm(*bases, eps=1e-5, upcast=False)
    assert_within_rule("out", got, ref, base)
    dout = torch.randn_like(x)
    for t, g in ((got, dout), (ref, dout.to(ORACLE[dtype])), (base, dout)):
        t.backward(g)
    for name, o, r, b in zip(("dx", "dweight", "dbias"), ours, refs, bases):
        assert_within_rule(name, o.grad, r.grad, b.grad, factor=GRAD_FACTOR)


def test_kernel_dropout_mask_follows_the_contract():
    x = torch.randn(300, 1000, device=DEVICE, dtype=torch.bfloat16)
    seed, offset = 2**50 + 3, 2**32 - 1
    _, mask = cuda_layer_norm.add_layer_norm_with_keep_mask(x, x, None, None, dropout_p=0.4, seed=seed, offset=offset)
    assert torch.equal(mask.cpu(), rng.rowwise_keep_mask(seed, offset, 0.4, 300, 1000))


def _mask_through_values(backend: str, torch_seed: int) -> torch.Tensor:
    """With x = 1 and residual = 0 the pre-norm sum is keep / (1 - p): the mask the backend applied."""
    x = torch.ones(64, 768, device=DEVICE, dtype=torch.float16)
    torch.manual_seed(torch_seed)
    _, total = ops.add_layer_norm(x, torch.zeros_like(x), None, None, dropout_p=0.3, prenorm=True, backend=backend)
    return (total != 0).cpu()


def test_applied_dropout_mask_is_the_contract_mask():
    torch.manual_seed(9)
    seed, offset = rng.draw_seed_offset()
    assert torch.equal(_mask_through_values("cuda", 9), rng.rowwise_keep_mask(seed, offset, 0.3, 64, 768))


def test_same_dropout_mask_as_triton():
    if "triton" not in semvlp.backends() or semvlp.backends()["triton"] is not None:
        pytest.skip(f"triton backend: {semvlp.backends().get('triton', 'not registered')}")
    assert torch.equal(_mask_through_values("cuda", 4), _mask_through_values("triton", 4))


def test_registered_ops_pass_opcheck():
    x = torch.randn(20, 96, device=DEVICE, dtype=torch.bfloat16)
    weight, bias = torch.randn(96, device=DEVICE), torch.randn(96, device=DEVICE)
    fwd_args = (x, x.clone(), weight, bias, None, 0.1, 1e-5, 5, 6, True, False)
    torch.library.opcheck(torch.ops.semvlp.cuda_add_layer_norm_fwd.default, fwd_args)
    _, total, rstd, _ = torch.ops.semvlp.cuda_add_layer_norm_fwd(*fwd_args)
    torch.library.opcheck(torch.ops.semvlp.cuda_add_layer_norm_bwd.default,
                          (torch.randn_like(x), None, total, weight, rstd, 0.1, 5, 6, True, True, False))
