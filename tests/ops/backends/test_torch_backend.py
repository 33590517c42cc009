"""The `torch` backend (PyTorch's fused layer_norm and gelu) against the reference: outputs and every gradient,
float32 to tolerance and bfloat16/float16 within the low-precision rule; dropout keeps the right share."""

import pytest
import torch

from semvlp import ops
from semvlp.ops import dispatch
from semvlp.ops.backends import reference
from tolerances import BACKEND_FP32_ATOL, GRAD_FACTOR, OUTPUT_FACTOR, assert_within_rule

# (a hidden size of 1 normalises a constant: both give 0, with rounding amplified by 1/sqrt(eps) in dweight)
SHAPES = [(1, 2), (3, 97), (2, 5, 64), (0, 16)]


def _inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = shape[-1]
    return dict(x=torch.randn(shape, generator=g) * 3 + 1, residual=torch.randn(shape, generator=g),
                weight=torch.randn(hidden, generator=g), bias=torch.randn(hidden, generator=g),
                x_bias=torch.randn(hidden, generator=g), dy=torch.randn(shape, generator=g))


def _run(fn, tensors: dict, dy):
    """fn(**leaves) and the gradients of every leaf for the output gradient dy."""
    leaves = {k: v.clone().requires_grad_() for k, v in tensors.items()}
    out = fn(**leaves)
    out.backward(dy.to(out.dtype))
    return {"out": out, **{f"d{k}": v.grad for k, v in leaves.items()}}


CASES = {
    "layer_norm": (lambda x, weight, bias, **_: ops.layer_norm(x, weight, bias, 0.5, backend="torch"),
                   lambda x, weight, bias, upcast=True, **_: reference.layer_norm(x, weight, bias, eps=0.5,
                                                                                  upcast=upcast),
                   ("x", "weight", "bias")),
    "add_layer_norm": (lambda x, residual, weight, bias, x_bias: ops.add_layer_norm(
                           x, residual, weight, bias, x_bias=x_bias, eps=1e-12, backend="torch"),
                       lambda x, residual, weight, bias, x_bias, upcast=True: reference.add_layer_norm(
                           x, residual, weight, bias, x_bias=x_bias, eps=1e-12, upcast=upcast),
                       ("x", "residual", "weight", "bias", "x_bias")),
    "bias_gelu": (lambda x, x_bias: ops.bias_gelu(x, x_bias, "tanh", backend="torch"),
                  lambda x, x_bias, upcast=True: reference.bias_gelu(x, x_bias, approximate="tanh", upcast=upcast),
                  ("x", "x_bias")),
    "bias_gelu_erf": (lambda x, x_bias: ops.bias_gelu(x, x_bias, "none", backend="torch"),
                      lambda x, x_bias, upcast=True: reference.bias_gelu(x, x_bias, upcast=upcast),
                      ("x", "x_bias")),
}


@pytest.mark.parametrize("op", sorted(CASES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float32_matches_reference(op, shape):
    ours, oracle, names = CASES[op]
    data = _inputs(shape)
    tensors = {k: data[k] for k in names}
    got, want = _run(ours, tensors, data["dy"]), _run(oracle, tensors, data["dy"])
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=BACKEND_FP32_ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("op", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_within_the_rule(op, dtype):
    ours, oracle, names = CASES[op]
    data = _inputs((4, 7, 96), seed=3)
    low = {k: data[k].to(dtype) for k in names}
    got = _run(ours, low, data["dy"].to(dtype))
    want = _run(oracle, {k: v.float() for k, v in low.items()}, data["dy"])
    plain = _run(lambda **kw: oracle(**kw, upcast=False), low, data["dy"].to(dtype))
    for name in want:
        assert_within_rule(name, got[name], want[name].to(dtype), plain[name],
                           factor=OUTPUT_FACTOR if name == "out" else GRAD_FACTOR)


def test_add_layer_norm_prenorm_and_dropout_keep_share():
    torch.manual_seed(0)
    x, residual = torch.full((400, 50), 2.0), torch.zeros(400, 50)
    out, total = ops.add_layer_norm(x, residual, None, None, dropout_p=0.3, eps=1e-5, prenorm=True, backend="torch")
    kept = total != 0
    assert torch.allclose(total[kept], torch.full_like(total[kept], 2.0 / 0.7))
    assert abs(kept.float().mean().item() - 0.7) < 0.02
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(total, (50,), eps=1e-5))


def test_auto_picks_torch_for_norms_and_activation_on_the_cpu():
    x = torch.randn(3, 8)
    assert dispatch.choose("bias_gelu", "auto", dict(x=x, bias=torch.randn(8), approximate="none"))[0] == "torch"
    inputs = dict(x=x, residual=x, weight=None, bias=None, x_bias=None, dropout_p=0.0, eps=1e-5, prenorm=False)
    assert dispatch.choose("add_layer_norm", "auto", inputs)[0] == "torch"
    q = torch.randn(1, 2, 1, 4)
    inputs = dict(q=q, k=q, v=q, attention_mask=None, dropout_p=0.0, softmax_scale=None, causal=False)
    assert dispatch.explain("attention", inputs)["torch"] == ["torch does not implement attention"]
