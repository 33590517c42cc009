"""The `triton` backend in dispatch: lazy import, readable reasons, and when `auto` takes it."""

import os
import subprocess
import sys

import pytest
import torch

from semvlp import ops
from semvlp.ops import dispatch
from semvlp.ops.backends import triton as triton_backend

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"


def _attention_inputs(device="cpu", dtype=torch.float32, head_dim=16):
    q = torch.randn(1, 3, 2, head_dim, device=device, dtype=dtype)
    return dict(q=q, k=q, v=q, attention_mask=None, dropout_p=0.0, softmax_scale=None, causal=False)


def test_import_semvlp_does_not_import_triton():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import sys, semvlp; assert 'triton' not in sys.modules, 'triton imported'; "
            "print(semvlp.backends()['triton'])")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    if not HAS_CUDA:
        assert "no CUDA GPU" in result.stdout and "TRITON_INTERPRET=1" in result.stdout


def test_missing_triton_is_a_readable_reason(monkeypatch):
    monkeypatch.setattr(triton_backend, "_triton_installed", lambda: False)
    assert dispatch.backends()["triton"] == "triton is not installed"
    with pytest.raises(ops.BackendNotSupportedError, match="triton is not installed"):
        ops.layer_norm(torch.randn(2, 8), None, None, backend="triton")


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only rule")
def test_cpu_without_interpreter_is_a_reason(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "no CUDA GPU" in dispatch.backends()["triton"]
    with pytest.raises(ops.BackendNotSupportedError, match="no CUDA GPU"):
        ops.bias_gelu(torch.randn(2, 8), torch.randn(8), backend="triton")


def test_auto_never_takes_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("SEMVLP_BACKEND", raising=False)
    name, _ = dispatch.choose("attention", "auto", _attention_inputs())
    assert name == "sdpa"
    x = torch.randn(2, 8)
    name, _ = dispatch.choose("layer_norm", "auto", dict(x=x, weight=None, bias=None, eps=1e-5))
    assert name == "torch"  # PyTorch's own layer_norm on the CPU, not the interpreter


def test_semvlp_backend_environment_forces_triton(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("SEMVLP_BACKEND", "triton")
    name, _ = dispatch.choose("attention", "auto", _attention_inputs())
    assert name == "triton"


@pytest.mark.gpu
def test_auto_takes_triton_where_it_measured_fastest_on_cuda():
    x = torch.randn(4, 768, device="cuda", dtype=torch.bfloat16)
    assert dispatch.choose("bias_gelu", "auto", dict(x=x, bias=x[0], approximate="none"))[0] == "triton"
    trained = dict(x=x.clone().requires_grad_(), bias=x[0], approximate="none")
    assert dispatch.choose("bias_gelu", "auto", trained)[0] == "torch"
    with torch.no_grad():
        assert dispatch.choose("bias_gelu", "auto", trained)[0] == "triton"
    assert dispatch.choose("attention", "auto", _attention_inputs("cuda", torch.bfloat16))[0] == "sdpa"
    norm = dict(x=x, residual=x, weight=None, bias=None, x_bias=None, dropout_p=0.0, eps=1e-5, prenorm=False)
    assert dispatch.choose("add_layer_norm", "auto", norm)[0] == "torch"
    assert dispatch.explain("add_layer_norm", norm)["triton"] == []  # forced, triton still runs it


def test_auto_rule_for_bias_gelu_asks_whether_a_gradient_is_recorded():
    leaf, plain = torch.randn(3, requires_grad=True), torch.randn(3)
    assert dispatch.records_grad(plain, leaf, "none")
    assert not dispatch.records_grad(plain, plain, "none")
    with torch.no_grad():
        assert not dispatch.records_grad(leaf, leaf, "none")


def test_unsupported_inputs_list_every_reason(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    reasons = dispatch.explain("attention", _attention_inputs(dtype=torch.float64, head_dim=192))["triton"]
    assert any("float64" in r for r in reasons) and any("head dim 192 exceeds 128" in r for r in reasons)
    x = torch.randn(2, 9000)
    reasons = dispatch.explain("add_layer_norm", dict(x=x, residual=x, weight=None, bias=None, x_bias=None,
                                                      dropout_p=0.0, eps=1e-5, prenorm=False))["triton"]
    assert reasons == ["hidden size 9000 exceeds 8192"]


def test_torch_compile_traces_the_custom_ops():
    """aot_eager runs the fake implementations to trace and the real kernels to execute: same values as eager."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 17, 2, 16, generator=gen).to(DEVICE).requires_grad_() for _ in range(3))
    residual, weight = (torch.randn(shape, generator=gen).to(DEVICE) for shape in ((2, 17, 32), (32,)))
    cotangent = torch.randn(2, 17, 32, generator=gen).to(DEVICE)

    def block(q, k, v):
        context = ops.attention(q, k, v, causal=True, backend="triton").reshape(2, 17, 32)
        return ops.add_layer_norm(context, residual, weight, None, backend="triton")

    results = []
    for fn in (block, torch.compile(block, backend="aot_eager")):
        out = fn(q, k, v)
        results.append((out.detach(), *torch.autograd.grad((out * cotangent).sum(), (q, k, v))))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
