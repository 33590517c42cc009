"""The CUDA extension semvlp._C on a machine without a GPU: build, registration, argument checks (on CPU and
meta tensors), Meta twins under symbolic tracing, the Philox stream, and the `cuda` backend's dispatch."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import semvlp
from semvlp import _ext, ops
from semvlp.ops import dispatch, rng
from semvlp.ops.backends import cuda as cuda_backend
from semvlp.ops.backends.cuda import attention as cuda_attention, layer_norm as cuda_layer_norm

ROOT = Path(__file__).resolve().parents[3]
built = pytest.mark.skipif(_ext.build_error() is not None, reason=f"semvlp._C: {_ext.build_error()}")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


def _toolkit_present() -> bool:
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    return shutil.which("nvcc") is not None or any(h and Path(h, "bin", "nvcc").exists() for h in homes)


def test_extension_is_built_where_a_cuda_toolkit_exists():
    if torch.version.cuda is None or not _toolkit_present() or os.environ.get("SEMVLP_SKIP_CUDA_BUILD") == "1":
        pytest.skip("no CUDA toolkit with a CUDA build of torch here (or SEMVLP_SKIP_CUDA_BUILD=1)")
    assert _ext.build_error() is None


def _cuobjdump() -> str | None:
    candidates = [shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"]
    try:
        import triton

        candidates.append(str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in candidates if c and Path(c).exists()), None)


@built
def test_extension_holds_machine_code_for_every_translation_unit():
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found (CUDA toolkit or triton's bundled copy)")
    listing = subprocess.run([tool, "--list-elf", _ext._C.__file__], capture_output=True, text=True, check=True).stdout
    cubins = re.findall(r"(\w+)\.sm_(\d+)\.cubin", listing)
    archs = sorted({arch for _, arch in cubins})
    translation_units = sorted(p.stem for p in (ROOT / "csrc").rglob("*.cu"))
    assert archs, f"no cubin in {_ext._C.__file__}"
    for arch in archs:
        assert sorted(unit for unit, a in cubins if a == arch) == translation_units, f"sm_{arch}"
    requested = os.environ.get("SEMVLP_CUDA_ARCHS")  # set by the Makefile for the CI build
    if requested:
        assert archs == sorted(a.strip() for a in requested.replace(",", ";").split(";") if a.strip())


@built
@no_gpu
def test_backends_say_there_is_no_gpu():
    assert semvlp.backends()["cuda"] == "no GPU (torch.cuda.is_available() is False)"


def test_backends_say_not_built_without_the_extension():
    # A None entry in sys.modules makes `import semvlp._C` fail as if the library were missing.
    code = ("import sys; sys.modules['semvlp._C'] = None; import semvlp; "
            "print(semvlp.backends()['cuda'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("not built: semvlp._C is missing")


def test_forcing_cuda_where_it_cannot_run_lists_the_reason():
    q = torch.zeros(4, 1, 64, dtype=torch.float16)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ops.BackendNotSupportedError, match="backend 'cuda' cannot run varlen_attention"):
        ops.varlen_attention(q, q, q, cu, cu, 4, 4, backend="cuda")


def _with(args: dict, device, changes: dict) -> dict:
    args.update({name: value.to(device) if isinstance(value, torch.Tensor) else value for name, value in changes.items()})
    return args


def _attention_args(device="cpu", **changes):
    q = torch.zeros(10, 2, 64, dtype=torch.float16, device=device)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32, device=device)
    args = dict(q=q, k=q.clone(), v=q.clone(), cu_seqlens_q=cu, cu_seqlens_k=cu.clone(), max_seqlen_q=6,
                max_seqlen_k=6, softmax_scale=0.125, causal=False, dropout_p=0.1, seed=1, offset=2,
                return_dropout_mask=True)
    return _with(args, device, changes)


def _attention_bwd_args(device="cpu", **changes):
    args = _attention_args(device)
    del args["return_dropout_mask"]
    args.update(dout=args["q"].clone(), out=args["q"].clone(), lse=torch.zeros(2, 10, device=device))
    return _with(args, device, changes)


def _layer_norm_args(device="cpu", **changes):
    x = torch.zeros(6, 48, dtype=torch.bfloat16, device=device)
    args = dict(x=x, residual=x.clone(), weight=torch.ones(48, device=device), bias=torch.zeros(48, device=device),
                x_bias=torch.zeros(48, dtype=torch.bfloat16, device=device), dropout_p=0.1, eps=1e-5, seed=3, offset=4,
                store_prenorm_sum=True, return_dropout_mask=True)
    return _with(args, device, changes)


def _layer_norm_bwd_args(device="cpu", **changes):
    dout = torch.zeros(6, 48, dtype=torch.bfloat16, device=device)
    args = dict(dout=dout, dprenorm_sum=dout.clone(), prenorm_sum=dout.clone(), weight=torch.ones(48, device=device),
                rstd=torch.ones(6, device=device), dropout_p=0.1, seed=3, offset=4, has_residual=True, has_bias=True,
                has_x_bias=False)
    return _with(args, device, changes)


def _op(name):
    return getattr(_ext.ops(), name)


BAD_ARGUMENTS = [
    ("cuda_varlen_attention_fwd", _attention_args, dict(q=torch.zeros(10, 2, 64)), r"q: expected dtype in"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(q=torch.zeros(10, 128, dtype=torch.float16)),
     r"q: expected a 3-d tensor"),
    ("cuda_varlen_attention_fwd", _attention_args,
     dict(q=torch.zeros(10, 2, 40, dtype=torch.float16), k=torch.zeros(10, 2, 40, dtype=torch.float16),
          v=torch.zeros(10, 2, 40, dtype=torch.float16)), r"head dim \(dim 2\) is 40, expected 32, 64 or 128"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(k=torch.zeros(10, 3, 64, dtype=torch.float16)),
     r"k: dim 1 \(number of heads"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(v=torch.zeros(9, 2, 64, dtype=torch.float16)),
     r"v: dim 0 \(number of keys"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(k=torch.zeros(10, 2, 64, dtype=torch.bfloat16)),
     r"k: expected the dtype of q"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(cu_seqlens_q=torch.tensor([0, 4, 10])),
     r"cu_seqlens_q: expected dtype in \(Int\)"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(cu_seqlens_k=torch.tensor([0, 10], dtype=torch.int32)),
     r"cu_seqlens_k: dim 0 \(n_segments \+ 1"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(dropout_p=1.0), r"dropout_p: expected a float in \[0, 1\)"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(offset=2**32), r"offset: expected 0 <= offset < 2\*\*32"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(max_seqlen_q=-1), r"max_seqlen_q: expected a non-negative"),
    ("cuda_varlen_attention_fwd", _attention_args, dict(softmax_scale=0.0), r"softmax_scale: expected a positive"),
    ("cuda_varlen_attention_bwd", _attention_bwd_args, dict(lse=torch.zeros(2, 9)), r"lse: dim 1 \(number of query"),
    ("cuda_varlen_attention_bwd", _attention_bwd_args, dict(lse=torch.zeros(2, 10, dtype=torch.float16)),
     r"lse: expected dtype in \(Float\)"),
    ("cuda_varlen_attention_bwd", _attention_bwd_args, dict(dout=torch.zeros(10, 2, 64, dtype=torch.bfloat16)),
     r"dout: expected the dtype of q"),
    ("cuda_varlen_attention_bwd", _attention_bwd_args, dict(out=torch.zeros(10, 2, 32, dtype=torch.float16)),
     r"out: expected the shape of q"),
    ("cuda_add_layer_norm_fwd", _layer_norm_args, dict(x=torch.zeros(2, 3, 48, dtype=torch.bfloat16)),
     r"x: expected a 2-d tensor"),
    ("cuda_add_layer_norm_fwd", _layer_norm_args, dict(x=torch.zeros(6, 48, dtype=torch.float64)),
     r"x: expected dtype in"),
    ("cuda_add_layer_norm_fwd", _layer_norm_args,
     dict(x=torch.zeros(6, 9000, dtype=torch.bfloat16), residual=None, weight=None, bias=None, x_bias=None),
     r"x: hidden size \(dim 1\) is 9000, expected 1 to 8192"),
    ("cuda_add_layer_norm_fwd", _layer_norm_args, dict(residual=torch.zeros(5, 48, dtype=torch.bfloat16)),
     r"residual: expected the shape of x"),
    ("cuda_add_layer_norm_fwd", _layer_norm_args, dict(weight=torch.ones(47)), r"weight: dim 0 \(length"),
    ("cuda_add_layer_norm_fwd", _layer_norm_args, dict(eps=0.0), r"eps: expected a positive float"),
    ("cuda_add_layer_norm_bwd", _layer_norm_bwd_args, dict(rstd=torch.zeros(5)), r"rstd: dim 0 \(number of rows"),
    ("cuda_add_layer_norm_bwd", _layer_norm_bwd_args, dict(prenorm_sum=torch.zeros(6, 48)),
     r"prenorm_sum: expected the dtype of dout"),
]


@built
@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("op,make_args,changes,message", BAD_ARGUMENTS,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(BAD_ARGUMENTS)])
def test_argument_checks_name_the_argument(device, op, make_args, changes, message):
    with pytest.raises(ValueError, match=message):
        _op(op)(**make_args(device, **changes))


@built
@pytest.mark.parametrize("op,make_args", [
    ("cuda_varlen_attention_fwd", _attention_args), ("cuda_varlen_attention_bwd", _attention_bwd_args),
    ("cuda_add_layer_norm_fwd", _layer_norm_args), ("cuda_add_layer_norm_bwd", _layer_norm_bwd_args)])
def test_valid_cpu_tensors_get_a_clear_cuda_only_error(op, make_args):
    with pytest.raises(ValueError, match=r"expected a CUDA tensor, got device cpu \(the semvlp CUDA kernels run on "
                                         r"the GPU only"):
        _op(op)(**make_args("cpu"))


@built
def test_autograd_wrappers_on_cpu_tensors_raise_the_same_error():
    q = torch.zeros(4, 1, 32, dtype=torch.float16)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match="expected a CUDA tensor"):
        cuda_attention.varlen_attention(q, q, q, cu, cu, 4, 4, softmax_scale=0.125)
    with pytest.raises(ValueError, match="expected a CUDA tensor"):
        cuda_layer_norm.add_layer_norm(q, q, None, None)


@built
def test_meta_twins_give_the_output_shapes():
    out, lse, mask = _op("cuda_varlen_attention_fwd")(**_attention_args("meta", max_seqlen_q=7, max_seqlen_k=9))
    assert (out.shape, out.dtype) == ((10, 2, 64), torch.float16)
    assert (lse.shape, lse.dtype) == ((2, 10), torch.float32)
    assert (mask.shape, mask.dtype) == ((2, 2, 7, 9), torch.bool)
    dq, dk, dv = _op("cuda_varlen_attention_bwd")(**_attention_bwd_args("meta", k=torch.zeros(12, 2, 64).half(),
                                                                         v=torch.zeros(12, 2, 64).half()))
    assert [t.shape for t in (dq, dk, dv)] == [(10, 2, 64), (12, 2, 64), (12, 2, 64)]
    out, prenorm, rstd, mask = _op("cuda_add_layer_norm_fwd")(**_layer_norm_args("meta"))
    assert [t.shape for t in (out, prenorm, rstd, mask)] == [(6, 48), (6, 48), (6,), (6, 48)]
    grads = _op("cuda_add_layer_norm_bwd")(**_layer_norm_bwd_args("meta"))
    assert [t.shape for t in grads] == [(6, 48), (6, 48), (48,), (48,), (0,)]


@built
def test_attention_traces_with_symbolic_shapes():
    def fwd_bwd(q, k, v, cu):
        out = cuda_attention.varlen_attention(q, k, v, cu, cu, 7, 7, softmax_scale=0.125, causal=True)
        return torch.autograd.grad(out.float().sum(), (q, k, v))

    q = torch.randn(10, 2, 64, dtype=torch.float16, requires_grad=True)
    cu = torch.tensor([0, 3, 10], dtype=torch.int32)
    graph = make_fx(fwd_bwd, tracing_mode="symbolic")(q, q.detach().clone().requires_grad_(),
                                                     q.detach().clone().requires_grad_(), cu)
    targets = [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
    assert "semvlp.cuda_varlen_attention_fwd.default" in targets
    assert "semvlp.cuda_varlen_attention_bwd.default" in targets


@built
def test_add_layer_norm_traces_with_symbolic_shapes():
    def fwd_bwd(x, residual, weight, bias):
        out, total = cuda_layer_norm.add_layer_norm(x, residual, weight, bias, prenorm=True)
        return torch.autograd.grad(out.float().sum() + total.float().sum(), (x, residual, weight, bias))

    x = torch.randn(4, 5, 96, dtype=torch.bfloat16, requires_grad=True)
    residual = torch.randn(4, 5, 96, dtype=torch.bfloat16, requires_grad=True)
    weight, bias = torch.ones(96, requires_grad=True), torch.zeros(96, requires_grad=True)
    graph = make_fx(fwd_bwd, tracing_mode="symbolic")(x, residual, weight, bias)
    targets = [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
    assert "semvlp.cuda_add_layer_norm_fwd.default" in targets
    assert "semvlp.cuda_add_layer_norm_bwd.default" in targets


@built
@pytest.mark.parametrize("seed,offset", [(0, 0), (1, 2**32 - 1), (2**62 - 1, 12345), (0x2EADBEEF12345678, 2**31)])
def test_philox_matches_the_python_reference_bit_for_bit(seed, offset):
    gen = np.random.default_rng(seed % 1000)
    edges = np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 1], dtype=np.uint64)
    c0 = np.concatenate([gen.integers(0, 2**32, 4096, dtype=np.uint64), np.repeat(edges, len(edges))])
    c1 = np.concatenate([gen.integers(0, 2**32, 4096, dtype=np.uint64), np.tile(edges, len(edges))])
    ours = _op("cuda_philox_uniform_cpu")(seed, offset, torch.from_numpy(c0.astype(np.int64)),
                                         torch.from_numpy(c1.astype(np.int64)))
    expected = rng.philox_uniform(seed, offset, c0, c1)
    assert torch.equal(ours.view(torch.int32), expected.view(torch.int32))
    assert 0.45 < ours.mean().item() < 0.55 and ours.min() >= 0 and ours.max() < 1


# Reasons of the cuda backend, with its availability forced (as on a GPU machine) so each input check shows.
@pytest.fixture
def cuda_backend_available(monkeypatch):
    monkeypatch.setattr(dispatch._BACKENDS["cuda"], "unavailable", lambda: None)


def _varlen_inputs(dtype=torch.float16, head_dim=64, max_seqlen_k=140):
    q = torch.zeros(4, 2, head_dim, dtype=dtype)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    return dict(q=q, k=q, v=q, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=4, max_seqlen_k=max_seqlen_k,
                dropout_p=0.0, softmax_scale=None, causal=False)


@pytest.mark.parametrize("op,inputs,reason", [
    ("varlen_attention", _varlen_inputs(), "cuda needs CUDA tensors, got q on cpu"),
    ("varlen_attention", _varlen_inputs(dtype=torch.float32), "cuda attention runs float16/bfloat16, got torch.float32"),
    ("varlen_attention", _varlen_inputs(head_dim=80), "cuda attention supports head dims (32, 64, 128), got 80"),
    ("varlen_attention", _varlen_inputs(max_seqlen_k=513), "max_seqlen_k 513 is above the cuda kernel's cap of 512"),
    ("attention", dict(q=torch.zeros(2, 3, 1, 64).half(), k=torch.zeros(2, 5, 1, 64).half(), v=None,
                       attention_mask=torch.ones(2, 5, dtype=torch.bool), dropout_p=0.0, softmax_scale=None,
                       causal=False), "cuda runs padded attention without attention_mask only"),
    ("add_layer_norm", dict(x=torch.zeros(3, 8, dtype=torch.float64)), "cuda layer norm runs float32/float16/bfloat16"),
    ("layer_norm", dict(x=torch.zeros(3, 9000)), "cuda layer norm supports hidden sizes 1 to 8192, got 9000"),
    ("bias_gelu", dict(x=torch.zeros(3, 8)), "cuda does not implement bias_gelu"),
])
def test_dispatch_reasons(cuda_backend_available, op, inputs, reason):
    reasons = dispatch.explain(op, inputs)["cuda"]
    assert any(reason in r for r in reasons), reasons


def test_a_supported_input_has_only_the_device_reason(cuda_backend_available):
    assert dispatch.explain("varlen_attention", _varlen_inputs())["cuda"] == ["cuda needs CUDA tensors, got q on cpu"]


def test_auto_takes_cuda_for_packed_attention_only(cuda_backend_available, monkeypatch):
    monkeypatch.setattr(cuda_backend, "_on_cuda", lambda name, t: [])  # cuda now supports these CPU inputs
    inputs = _varlen_inputs()
    assert dispatch.explain("varlen_attention", inputs)["cuda"] == []
    assert dispatch.choose("varlen_attention", "auto", inputs)[0] == "cuda"
    x = torch.zeros(3, 8)
    norm_inputs = dict(x=x, residual=x, weight=None, bias=None, x_bias=None, dropout_p=0.0, eps=1e-5, prenorm=False)
    assert dispatch.choose("add_layer_norm", "auto", norm_inputs)[0] != "cuda"
    assert dispatch.choose("add_layer_norm", "cuda", norm_inputs)[0] == "cuda"
