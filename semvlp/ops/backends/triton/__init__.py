"""The `triton` backend: the fused Triton kernels of `semvlp.kernels`, priority 20 (above sdpa and reference).

Nothing here imports triton: the kernels and their custom ops load on the first call, so `import semvlp`
works on machines without triton. Where it runs:
- CUDA tensors of float32/float16/bfloat16 whose sizes the kernels support: chosen by `auto`.
- CPU tensors only when forced (backend="triton" or SEMVLP_BACKEND=triton) with TRITON_INTERPRET=1, through
  Triton's interpreter (slow; that is how the tests run without a GPU).
Every other case is a readable reason from the supports-functions below.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys

import torch

from ...dispatch import Backend, records_grad, register_backend

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 128  # kernels/attention.py: one head fits one tile
MAX_HIDDEN = 8192  # kernels/layer_norm.py: one row fits one tile


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _triton_installed() -> bool:
    # Cached: a module search stats the file system, and dispatch asks on every call of every op.
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _unavailable() -> str | None:
    if not _triton_installed():
        return "triton is not installed"
    if not _cuda_available() and not _interpret():
        return "no CUDA GPU (set TRITON_INTERPRET=1 to run the kernels on the CPU through Triton's interpreter)"
    return None


def _tensor_reasons(**named) -> list[str]:
    reasons = []
    for name, t in named.items():
        if t is None:
            continue
        if t.dtype not in DTYPES:
            reasons.append(f"{name} has dtype {t.dtype}, expected float32, float16 or bfloat16")
        if t.device.type == "cpu" and not _interpret():
            reasons.append(f"{name} is on the CPU, which needs TRITON_INTERPRET=1")
        elif t.device.type not in ("cuda", "cpu"):
            reasons.append(f"{name} is on {t.device}, expected a CUDA device")
    return reasons


def _attention_reasons(q, **_inputs) -> list[str]:
    reasons = _tensor_reasons(q=q)  # k and v share q's dtype and device (checked by the public op)
    if q.shape[-1] > MAX_HEAD_DIM:
        reasons.append(f"head dim {q.shape[-1]} exceeds {MAX_HEAD_DIM}")
    return reasons


def _layer_norm_reasons(x, weight=None, bias=None, residual=None, x_bias=None, **_inputs) -> list[str]:
    reasons = _tensor_reasons(x=x, residual=residual, weight=weight, bias=bias, x_bias=x_bias)
    if residual is not None and residual.dtype != x.dtype:
        reasons.append(f"x is {x.dtype} and residual {residual.dtype}: the kernel takes one dtype for both")
    if x.shape[-1] > MAX_HIDDEN:
        reasons.append(f"hidden size {x.shape[-1]} exceeds {MAX_HIDDEN}")
    return reasons


def _bias_gelu_reasons(x, bias=None, **_inputs) -> list[str]:
    return _tensor_reasons(x=x, bias=bias)


# Where `auto` leaves triton aside on a GPU because another backend measured faster on an H100 in bf16
# (bench/results/attention_nvidia-h100-80gb-hbm3_20261127T031644Z.json and
# layer_norm_nvidia-h100-80gb-hbm3_20261127T032036Z.json; the first visit's files agree): padded attention
# (sdpa 1.13 vs 1.97 ms fwd+bwd at batch 256 x 140 tokens) and the LayerNorms (torch 0.59 vs 1.66 ms fwd+bwd
# at 35840 x 768). Forced, triton still runs them.
SLOWER_ON_GPU = {
    "attention": "sdpa measured faster for padded attention on an H100",
    "layer_norm": "the torch backend measured faster for LayerNorm on an H100",
    "add_layer_norm": "the torch backend measured faster for add+LayerNorm on an H100",
}
# bias_gelu: the Triton kernel is 2.6x faster forward (0.168 vs 0.436 ms at 35840 x 3072) but not fwd+bwd
# (0.792 vs 0.751 ms), and each call costs the host about 0.3 ms where PyTorch's gelu costs a few µs
# (profile_step_nvidia-h100-80gb-hbm3_20261127T0318Z.txt: BERT-base steps are bound by the host). So `auto`
# takes it only when no gradient is recorded.
GELU_WITH_GRAD = "bias_gelu with gradients: the torch backend measured as fast fwd+bwd on an H100, at less host time"


def _auto_reasons(op: str, inputs: dict) -> list[str]:
    """`auto` takes this backend for CUDA tensors only (the interpreter is for forced calls), and not where
    another backend measured faster."""
    first = next(t for t in inputs.values() if isinstance(t, torch.Tensor))
    if first.device.type != "cuda":
        return [f"tensors on {first.device.type}: the interpreter runs only when backend='triton' is forced"]
    if op == "bias_gelu" and records_grad(*inputs.values()):
        return [GELU_WITH_GRAD]
    return [SLOWER_ON_GPU[op]] if op in SLOWER_ON_GPU else []


def _lazy(module: str, function: str):
    """A function that imports semvlp.ops.backends.triton.<module> (and so triton) on its first call."""
    def call(**inputs):
        # sys.modules first: torch.compile cannot trace import_module, but traces a call of a loaded module.
        name = f"{__name__}.{module}"
        return getattr(sys.modules.get(name) or importlib.import_module(name), function)(**inputs)

    call.__name__ = f"triton_{function}"
    return call


register_backend(Backend(
    name="triton",
    priority=20,
    unavailable=_unavailable,
    auto_reasons=_auto_reasons,
    philox_dropout=True,
    env_vars=("TRITON_INTERPRET",),
    ops={
        "attention": (_attention_reasons, _lazy("attention", "attention")),
        "varlen_attention": (_attention_reasons, _lazy("attention", "varlen_attention")),
        "layer_norm": (_layer_norm_reasons, _lazy("layer_norm", "layer_norm")),
        "add_layer_norm": (_layer_norm_reasons, _lazy("layer_norm", "add_layer_norm")),
        "bias_gelu": (_bias_gelu_reasons, _lazy("bias_gelu", "bias_gelu")),
    },
))
