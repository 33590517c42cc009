"""The triton backend's bias_gelu (erf and tanh forms) against the reference: output, dx and dbias."""

import pytest
import torch

from semvlp import ops
from semvlp.ops.backends import reference
from triton_compare import check_against_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _bias_gelu(**kw):
    return ops.bias_gelu(**kw, backend="triton")


def _reference(**kw):
    return reference.bias_gelu(**kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", [(37, 45), (3, 5, 300), (1,)], ids=str)
def test_bias_gelu_matches_reference(shape, approximate, dtype):
    gen = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(shape, generator=gen)).to(DEVICE, dtype)
    bias = torch.randn(shape[-1], generator=gen).to(DEVICE, dtype)
    check_against_reference(_bias_gelu, _reference, dict(x=x, bias=bias, approximate=approximate))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_saturated_inputs_stay_finite(approximate):
    """|x| up to 1e4: tanh and the erf/exp terms saturate, output is x or 0 and the gradient 1 or 0."""
    x = torch.tensor([[-1e4, -60.0, -10.0, 0.0, 10.0, 60.0, 1e4]], device=DEVICE, requires_grad=True)
    bias = torch.zeros(7, device=DEVICE)
    out = ops.bias_gelu(x, bias, approximate, backend="triton")
    out.sum().backward()
    expected_out = torch.tensor([[0.0, 0.0, 0.0, 0.0, 10.0, 60.0, 1e4]], device=DEVICE)
    expected_grad = torch.tensor([[0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]], device=DEVICE)
    torch.testing.assert_close(out.detach(), expected_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(x.grad, expected_grad, rtol=0, atol=1e-5)


def test_float32_bias_with_bfloat16_input():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(17, 96, generator=gen).to(DEVICE, torch.bfloat16)
    bias = torch.randn(96, generator=gen).to(DEVICE)
    check_against_reference(_bias_gelu, _reference, dict(x=x, bias=bias, approximate="none"))


def test_non_contiguous_input_matches_contiguous():
    x = torch.randn(40, 64, device=DEVICE)[:, 1::2]
    bias = torch.randn(32, device=DEVICE)
    torch.testing.assert_close(ops.bias_gelu(x, bias, backend="triton"),
                               ops.bias_gelu(x.contiguous(), bias, backend="triton"), rtol=0, atol=0)


def test_custom_ops_pass_opcheck():
    import semvlp.ops.backends.triton.bias_gelu  # noqa: F401  (registers the ops; the backend imports it lazily)

    x, bias = torch.randn(6, 33, device=DEVICE), torch.randn(33, device=DEVICE)
    torch.library.opcheck(torch.ops.semvlp.triton_bias_gelu_fwd, (x, bias, "tanh"))
    torch.library.opcheck(torch.ops.semvlp.triton_bias_gelu_bwd, (torch.randn_like(x), x, bias, "none"))
