"""Runs the csrc/ kernels on the CPU emulator (emulator.cpp), with the launchers' argument conventions.

The harness is compiled with g++ against the CUDA headers (cuda_fp16.h, cuda_bf16.h; no GPU, no CUDA
runtime) into build/cuda_emulator/<hash of the sources>/, once per source change. `available()` says why it
cannot be built here: only a missing g++ or missing CUDA headers; with both present a failed build is an error.
Inputs are CPU tensors; outputs are CPU tensors shaped as the real ops return them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "harness.cpp", HERE / "emulator.cpp"]
HEADERS = [HERE / "emulator.h", HERE / "emulated_device.h", *sorted((ROOT / "csrc").rglob("*.h")),
           *sorted((ROOT / "csrc").rglob("*.cuh"))]

_ATTENTION_DTYPES = {torch.float16: 0, torch.bfloat16: 1}
_LAYER_NORM_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class AttentionParams(ctypes.Structure):
    """Mirror of semvlp::AttentionParams (csrc/attention/attention_params.h), field for field."""

    _fields_ = [
        ("q", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p),
        ("q_row_stride", ctypes.c_int64), ("q_head_stride", ctypes.c_int64),
        ("k_row_stride", ctypes.c_int64), ("k_head_stride", ctypes.c_int64),
        ("v_row_stride", ctypes.c_int64), ("v_head_stride", ctypes.c_int64),
        ("cu_seqlens_q", ctypes.c_void_p), ("cu_seqlens_k", ctypes.c_void_p),
        ("out", ctypes.c_void_p), ("out_row_stride", ctypes.c_int64), ("out_head_stride", ctypes.c_int64),
        ("lse", ctypes.c_void_p), ("dropout_mask", ctypes.c_void_p),
        ("dout", ctypes.c_void_p), ("dout_row_stride", ctypes.c_int64), ("dout_head_stride", ctypes.c_int64),
        ("dq_accum", ctypes.c_void_p), ("delta", ctypes.c_void_p), ("dk", ctypes.c_void_p), ("dv", ctypes.c_void_p),
        ("dk_row_stride", ctypes.c_int64), ("dk_head_stride", ctypes.c_int64),
        ("dv_row_stride", ctypes.c_int64), ("dv_head_stride", ctypes.c_int64),
        ("n_segments", ctypes.c_int), ("nheads", ctypes.c_int), ("head_dim", ctypes.c_int),
        ("total_q", ctypes.c_int), ("max_seqlen_q", ctypes.c_int), ("max_seqlen_k", ctypes.c_int),
        ("softmax_scale", ctypes.c_float), ("causal", ctypes.c_bool),
        ("dropout_p", ctypes.c_float), ("seed", ctypes.c_uint64), ("offset", ctypes.c_uint32),
        ("dtype", ctypes.c_int),
    ]


class LayerNormParams(ctypes.Structure):
    """Mirror of semvlp::LayerNormParams (csrc/layer_norm/layer_norm_params.h), field for field."""

    _fields_ = [
        ("x", ctypes.c_void_p), ("residual", ctypes.c_void_p), ("weight", ctypes.c_void_p),
        ("bias", ctypes.c_void_p), ("x_bias", ctypes.c_void_p),
        ("out", ctypes.c_void_p), ("prenorm_sum", ctypes.c_void_p), ("rstd", ctypes.c_void_p),
        ("dropout_mask", ctypes.c_void_p),
        ("dout", ctypes.c_void_p), ("dprenorm_sum", ctypes.c_void_p), ("dx", ctypes.c_void_p),
        ("dresidual", ctypes.c_void_p), ("dweight_partial", ctypes.c_void_p), ("dbias_partial", ctypes.c_void_p),
        ("dx_bias_partial", ctypes.c_void_p),
        ("rows", ctypes.c_int), ("hidden", ctypes.c_int), ("eps", ctypes.c_float), ("dropout_p", ctypes.c_float),
        ("seed", ctypes.c_uint64), ("offset", ctypes.c_uint32), ("dtype", ctypes.c_int),
    ]


# The headers the harness includes, and the toolkit roots searched besides CUDA_HOME, CUDA_PATH and nvcc's own
# (setup.py's search, plus a distribution's toolkit under /usr).
NEEDED_HEADERS = ("cuda_fp16.h", "cuda_bf16.h")
SYSTEM_TOOLKITS = ("/usr/local/cuda", "/usr")
BUILD_ROOT = ROOT / "build" / "cuda_emulator"


def _include_candidates() -> list[Path]:
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), *SYSTEM_TOOLKITS]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    return list(dict.fromkeys(Path(root) / "include" for root in roots if root))


def _cuda_include() -> Path | None:
    for include in _include_candidates():
        if all((include / name).is_file() for name in NEEDED_HEADERS):
            return include
    return None


def available() -> str | None:
    """None when the emulator's tools are here, else why not: only a missing g++ or missing CUDA headers.

    Where both are present the emulator must build: a failed build raises (the tests fail), never skips.
    """
    if shutil.which("g++") is None:
        return "g++ not found on PATH (the emulator is compiled with it)"
    if _cuda_include() is None:
        searched = ", ".join(str(p) for p in _include_candidates())
        return (f"CUDA headers {' and '.join(NEEDED_HEADERS)} not found in any of: {searched} "
                f"(set CUDA_HOME to a CUDA toolkit)")
    return None


_LIB = None
_BUILD_ERROR: str | None = None  # a failed build is reported by every test without compiling again


def _build(include: Path, lib_path: Path) -> None:
    global _BUILD_ERROR
    if _BUILD_ERROR is not None:
        raise RuntimeError(_BUILD_ERROR)
    lib_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib_path.parent / f"tmp-{os.getpid()}.so"
    cmd = ["g++", "-std=c++20", "-O2", "-fPIC", "-shared", "-Wno-unknown-pragmas", "-DSEMVLP_EMULATE",
           f"-I{HERE}", f"-I{include}", *map(str, SOURCES), "-o", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        _BUILD_ERROR = (f"the CUDA emulator failed to build (g++ and the CUDA headers in {include} are present, so "
                        f"this is an error, not a skip):\n{' '.join(cmd)}\n{result.stderr[-4000:]}")
        raise RuntimeError(_BUILD_ERROR)
    tmp.replace(lib_path)


def _library():
    global _LIB
    if _LIB is not None:
        return _LIB
    reason = available()
    if reason is not None:
        raise RuntimeError(f"CUDA emulator unavailable: {reason}")
    include = _cuda_include()
    sources = b"".join(p.read_bytes() for p in SOURCES + HEADERS) + str(include).encode()
    lib_path = BUILD_ROOT / hashlib.sha256(sources).hexdigest()[:16] / "libsemvlp_emulated.so"
    if not lib_path.exists():
        _build(include, lib_path)
    lib = ctypes.CDLL(str(lib_path))
    lib.emu_last_error.restype = ctypes.c_char_p
    lib.emu_sizeof_attention_params.restype = ctypes.c_size_t
    lib.emu_sizeof_layer_norm_params.restype = ctypes.c_size_t
    for name, struct in (("attention_params", AttentionParams), ("layer_norm_params", LayerNormParams)):
        size = getattr(lib, f"emu_sizeof_{name}")()
        if size != ctypes.sizeof(struct):
            raise RuntimeError(f"{struct.__name__} mirror is {ctypes.sizeof(struct)} bytes, C++ has {size}")
    _LIB = lib
    return lib


def broken_kernel_report(which: int) -> str:
    """The emulator's report on a deliberately broken kernel (0: missing barrier, 1: shared memory out of
    bounds, 2: divergent warp collective, 3: cp.async never waited for); "" if it found nothing."""
    lib = _library()
    return lib.emu_last_error().decode() if lib.emu_broken_kernel(which) else ""


def _check(status: int) -> None:
    if status != 0:
        raise AssertionError("emulated kernel failed:\n" + _library().emu_last_error().decode())


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _attention_params(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                      dropout_p, seed, offset) -> AttentionParams:
    p = AttentionParams()
    p.q, p.k, p.v = _ptr(q), _ptr(k), _ptr(v)
    p.q_row_stride, p.q_head_stride = q.stride(0), q.stride(1)
    p.k_row_stride, p.k_head_stride = k.stride(0), k.stride(1)
    p.v_row_stride, p.v_head_stride = v.stride(0), v.stride(1)
    p.cu_seqlens_q, p.cu_seqlens_k = _ptr(cu_seqlens_q), _ptr(cu_seqlens_k)
    p.n_segments = cu_seqlens_q.numel() - 1
    p.nheads, p.head_dim, p.total_q = q.shape[1], q.shape[2], q.shape[0]
    p.max_seqlen_q, p.max_seqlen_k = max_seqlen_q, max_seqlen_k
    p.softmax_scale, p.causal = softmax_scale, causal
    p.dropout_p, p.seed, p.offset = dropout_p, seed, offset
    p.dtype = _ATTENTION_DTYPES[q.dtype]
    return p


def attention_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, softmax_scale, causal=False,
                  dropout_p=0.0, seed=0, offset=0):
    """(out, lse, dropout_mask) as semvlp::cuda_varlen_attention_fwd with return_dropout_mask=True."""
    out = torch.empty(q.shape, dtype=q.dtype)
    lse = torch.full((q.shape[1], q.shape[0]), float("nan"), dtype=torch.float32)
    n_segments = cu_seqlens_q.numel() - 1
    mask_shape = (n_segments, q.shape[1], max_seqlen_q, max_seqlen_k)
    mask = torch.zeros(mask_shape, dtype=torch.uint8) if dropout_p > 0 else torch.ones(mask_shape, dtype=torch.uint8)
    p = _attention_params(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                          dropout_p, seed, offset)
    p.out, p.out_row_stride, p.out_head_stride = _ptr(out), out.stride(0), out.stride(1)
    p.lse, p.dropout_mask = _ptr(lse), _ptr(mask) if dropout_p > 0 else None
    if q.shape[0] > 0 and max_seqlen_q > 0:
        _check(_library().emu_attention_fwd(ctypes.byref(p)))
    return out, lse, mask.bool()


def attention_bwd(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                  softmax_scale, causal=False, dropout_p=0.0, seed=0, offset=0):
    """(dq, dk, dv) as semvlp::cuda_varlen_attention_bwd."""
    dq_accum = torch.zeros(q.shape, dtype=torch.float32)
    delta = torch.full((q.shape[1], q.shape[0]), float("nan"), dtype=torch.float32)
    dk = torch.full(k.shape, float("nan"), dtype=k.dtype)
    dv = torch.full(v.shape, float("nan"), dtype=v.dtype)
    p = _attention_params(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                          dropout_p, seed, offset)
    p.out, p.out_row_stride, p.out_head_stride = _ptr(out), out.stride(0), out.stride(1)
    p.lse = _ptr(lse)
    p.dout, p.dout_row_stride, p.dout_head_stride = _ptr(dout), dout.stride(0), dout.stride(1)
    p.dq_accum, p.delta, p.dk, p.dv = _ptr(dq_accum), _ptr(delta), _ptr(dk), _ptr(dv)
    p.dk_row_stride, p.dk_head_stride = dk.stride(0), dk.stride(1)
    p.dv_row_stride, p.dv_head_stride = dv.stride(0), dv.stride(1)
    if k.shape[0] > 0 and max_seqlen_k > 0:
        _check(_library().emu_attention_bwd(ctypes.byref(p)))
    elif q.shape[0] > 0:
        dk, dv = dk.zero_(), dv.zero_()
    return dq_accum.to(q.dtype), dk, dv


def layer_norm_fwd(x, residual, weight, bias, x_bias, *, eps, dropout_p=0.0, seed=0, offset=0):
    """(out, prenorm_sum, rstd, dropout_mask) for 2-d x; params are cast to fp32 as the launcher does."""
    rows, hidden = x.shape
    as_f32 = [None if t is None else t.float().contiguous() for t in (weight, bias, x_bias)]
    out, prenorm = torch.empty_like(x), torch.empty_like(x)
    rstd = torch.empty(rows)
    mask = torch.zeros((rows, hidden), dtype=torch.uint8)
    p = LayerNormParams()
    p.x, p.residual = _ptr(x), _ptr(residual)
    p.weight, p.bias, p.x_bias = (_ptr(t) for t in as_f32)
    p.out, p.prenorm_sum, p.rstd = _ptr(out), _ptr(prenorm), _ptr(rstd)
    p.dropout_mask = _ptr(mask) if dropout_p > 0 else None
    p.rows, p.hidden, p.eps, p.dropout_p, p.seed, p.offset = rows, hidden, eps, dropout_p, seed, offset
    p.dtype = _LAYER_NORM_DTYPES[x.dtype]
    _check(_library().emu_layer_norm_fwd(ctypes.byref(p)))
    return out, prenorm, rstd, mask.bool()


def layer_norm_bwd(dout, dprenorm, prenorm, weight, rstd, *, has_residual, has_bias, has_x_bias,
                   dropout_p=0.0, seed=0, offset=0, blocks=3):
    """(dx, dresidual, dweight, dbias, dx_bias) in fp32 for the params; `blocks` < rows exercises the row loop."""
    rows, hidden = dout.shape
    blocks = min(blocks, rows)
    weight32 = None if weight is None else weight.float().contiguous()
    dx = torch.empty_like(dout)
    dresidual = torch.empty_like(dout) if has_residual else None
    partial = {name: torch.full((blocks, hidden), float("nan")) for name, wanted in
               (("dweight", weight is not None), ("dbias", has_bias), ("dx_bias", has_x_bias)) if wanted}
    p = LayerNormParams()
    p.dout, p.dprenorm_sum, p.prenorm_sum = _ptr(dout), _ptr(dprenorm), _ptr(prenorm)
    p.weight, p.rstd = _ptr(weight32), _ptr(rstd)
    p.dx, p.dresidual = _ptr(dx), _ptr(dresidual)
    p.dweight_partial = _ptr(partial.get("dweight"))
    p.dbias_partial = _ptr(partial.get("dbias"))
    p.dx_bias_partial = _ptr(partial.get("dx_bias"))
    p.rows, p.hidden, p.dropout_p, p.seed, p.offset = rows, hidden, dropout_p, seed, offset
    p.dtype = _LAYER_NORM_DTYPES[dout.dtype]
    _check(_library().emu_layer_norm_bwd(ctypes.byref(p), blocks))
    sums = {name: t.sum(0) for name, t in partial.items()}
    return dx, dresidual, sums.get("dweight"), sums.get("dbias"), sums.get("dx_bias")
