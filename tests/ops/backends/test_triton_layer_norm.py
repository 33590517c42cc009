"""The triton backend's add_layer_norm and layer_norm against the reference: outputs and every gradient with
the tolerance rule, under Triton's interpreter (CPU) or on the GPU."""

import pytest
import torch

from semvlp import ops
from semvlp.ops.backends import reference
from triton_compare import check_against_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _tensors(shape, dtype, hidden, param_dtype=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, residual = (torch.randn(shape, generator=gen).to(DEVICE, dtype) for _ in range(2))
    weight, bias, x_bias = (torch.randn(hidden, generator=gen).to(DEVICE, param_dtype or dtype) for _ in range(3))
    return x, residual, weight, bias, x_bias


def _add_layer_norm(**kw):
    return ops.add_layer_norm(**kw, backend="triton")


# (shape, weight, bias, x_bias, prenorm)
ADD_CASES = [
    ((13, 97), True, True, True, False),
    ((3, 7, 130), True, True, False, True),
    ((7, 1), True, True, True, True),  # hidden 1: every row normalises to 0 and dweight is exactly 0
    ((5, 768), False, False, True, False),
    ((2, 8192), True, False, False, True),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ADD_CASES, ids=lambda c: "x".join(map(str, c[0])) + "_w{:d}b{:d}xb{:d}pre{:d}".format(*c[1:]))
def test_add_layer_norm_matches_reference(case, dtype):
    shape, has_weight, has_bias, has_x_bias, prenorm = case
    x, residual, weight, bias, x_bias = _tensors(shape, dtype, shape[-1])
    inputs = dict(x=x, residual=residual, weight=weight if has_weight else None, bias=bias if has_bias else None,
                  x_bias=x_bias if has_x_bias else None, eps=1e-5, prenorm=prenorm)
    check_against_reference(_add_layer_norm, reference.add_layer_norm, inputs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(29, 97), (2, 3, 256), (4, 1000)], ids=str)
def test_layer_norm_matches_reference(shape, dtype):
    x, _, weight, bias, _ = _tensors(shape, dtype, shape[-1])
    check_against_reference(lambda **kw: ops.layer_norm(**kw, backend="triton"), reference.layer_norm,
                            dict(x=x, weight=weight, bias=bias, eps=1e-12))


def test_float32_parameters_with_bfloat16_activations():
    """Under autocast the LayerNorm parameters stay float32: outputs take x's dtype, grads their own."""
    x, residual, weight, bias, x_bias = _tensors((11, 130), torch.bfloat16, 130, param_dtype=torch.float32)
    check_against_reference(_add_layer_norm, reference.add_layer_norm,
                            dict(x=x, residual=residual, weight=weight, bias=bias, x_bias=x_bias, eps=1e-5))


def test_non_contiguous_input_matches_contiguous():
    x, residual, weight, bias, _ = _tensors((96, 40), torch.float32, 20)
    strided = x[:, ::2]
    out = ops.add_layer_norm(strided, residual[:, :20], weight, bias, backend="triton")
    expected = ops.add_layer_norm(strided.contiguous(), residual[:, :20].contiguous(), weight, bias, backend="triton")
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_no_rows_gives_empty_output_and_zero_parameter_grads():
    x, residual, weight, bias, _ = _tensors((0, 33), torch.float32, 33)
    weight.requires_grad_()
    out = ops.add_layer_norm(x, residual, weight, bias, backend="triton")
    out.sum().backward()
    assert out.shape == (0, 33)
    assert torch.equal(weight.grad, torch.zeros_like(weight))


def test_only_prenorm_output_used_in_loss():
    """The gradient reaches x and residual through the pre-norm sum alone when `out` is unused."""
    x, residual, weight, bias, _ = _tensors((6, 48), torch.float32, 48)
    x.requires_grad_()
    _, total = ops.add_layer_norm(x, residual, weight, bias, prenorm=True, backend="triton")
    total.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x), rtol=0, atol=0)


def test_hidden_size_limit_is_a_reason():
    x = torch.randn(2, 8200, device=DEVICE)
    with pytest.raises(ops.BackendNotSupportedError, match="hidden size 8200 exceeds 8192"):
        ops.layer_norm(x, None, None, backend="triton")


def test_custom_ops_pass_opcheck():
    import semvlp.ops.backends.triton.layer_norm  # noqa: F401  (registers the ops; the backend imports it lazily)

    x, residual, weight, bias, x_bias = _tensors((5, 37), torch.float32, 37)
    fwd_args = (x, residual, weight, bias, x_bias, 0.2, 1e-5, 9, 2**31 + 1, True)
    torch.library.opcheck(torch.ops.semvlp.triton_add_layer_norm_fwd, fwd_args)
    _, total = torch.ops.semvlp.triton_add_layer_norm_fwd(*fwd_args)
    torch.library.opcheck(torch.ops.semvlp.triton_add_layer_norm_bwd,
                          (torch.randn_like(x), torch.randn_like(x), total, weight, 1e-5, 0.2, 9, 2**31 + 1))
    torch.library.opcheck(torch.ops.semvlp.triton_add_layer_norm_fwd,
                          (x, None, None, None, None, 0.0, 1e-5, 0, 0, False))
