"""Fused add+LayerNorm and bias-GELU: GB/s against the device's copy bandwidth measured in the same run, and
ratios to the unfused PyTorch chain (the baseline), torch.compile of that chain, apex and Liger.

Cases (bf16 on a GPU, float32 on the CPU), modes fwd (no autograd) and fwdbwd:
  add_ln_*    LayerNorm(residual + dropout(x + x_bias)) with dropout 0.1, affine weight and bias
              (the end of every post-LN sub-block): 256 x 140 tokens x 768, and 8192 x 1024 / 4096 x 4096 /
              2048 x 8192
  gelu_*      gelu(x + bias): 256 x 140 tokens x 3072 (the feed-forward intermediate)
Byte floors per element of the (rows, hidden) tensors, s = bytes per element:
  add_ln   fwd 3s (read x, residual; write out); fwdbwd 7s (+ read dout and one saved tensor, write dx and
           d_residual, which differ under dropout)
  gelu     fwd 2s (read x, write y); fwdbwd 5s (+ read dy and x, write dx)
`copy` copies that many bytes (half read, half written): its GB/s is the copy bandwidth of this run.

    python -m bench.bench_layer_norm --quick         # tiny shapes on the CPU: checks that it runs
    python -m bench.bench_layer_norm --budget 120    # GPU
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from bench import harness
from bench.semvlp_providers import backend_providers
from semvlp import ops

DROPOUT = 0.1
EPS = 1e-12
MODES = ("fwdbwd", "fwd")
LN_SHAPES = [("vl_35840x768", 256 * 140, 768), ("8192x1024", 8192, 1024), ("4096x4096", 4096, 4096),
             ("2048x8192", 2048, 8192)]
GELU_SHAPES = [("vl_35840x3072", 256 * 140, 3072)]
QUICK_LN = [("q_300x96", 300, 96)]
QUICK_GELU = [("q_300x384", 300, 384)]
BYTES_PER_ELEMENT = {("add_ln", "fwd"): 3, ("add_ln", "fwdbwd"): 7, ("gelu", "fwd"): 2, ("gelu", "fwdbwd"): 5}


def _inputs(op, rows, hidden, dtype, mode):
    def make(device):
        def act():
            return torch.randn(rows, hidden, device=device, dtype=dtype, requires_grad=True)

        def param():
            # Parameters in the activation dtype, as DeepSpeed's bf16/fp16 modes keep them (PyTorch's own
            # layer_norm on CUDA also rejects fp32 parameters with 16-bit input).
            return torch.randn(hidden, device=device, dtype=dtype, requires_grad=True)

        inp = {"op": op, "mode": mode, "x": act(), "bias": param(),
               "dout": torch.randn(rows, hidden, device=device, dtype=dtype)}
        if op == "add_ln":
            inp.update(residual=act(), weight=param(), ln_bias=param())
        inp["leaves"] = [t for t in inp.values() if isinstance(t, torch.Tensor) and t.requires_grad]
        return inp
    return make


def _timed(inp, forward):
    if inp["mode"] == "fwd":
        def run():
            with torch.no_grad():
                return forward()
        return run
    return lambda: torch.autograd.grad(forward(), inp["leaves"], inp["dout"])


def _chain(inp):
    """The unfused PyTorch ops of the case."""
    if inp["op"] == "gelu":
        return F.gelu(inp["x"] + inp["bias"])
    total = inp["residual"] + F.dropout(inp["x"] + inp["bias"], DROPOUT)
    return F.layer_norm(total, total.shape[-1:], inp["weight"], inp["ln_bias"], EPS)


_compiled_chain = None


def build(args) -> harness.Benchmark:
    """add_layer_norm and bias_gelu, fwd and fwd+bwd."""
    dtype = torch.bfloat16 if args.device.type == "cuda" else torch.float32
    if args.compile is None:
        args.compile = args.device.type == "cuda"
    size = torch.finfo(dtype).bits // 8
    cases = []
    for op, shapes in (("add_ln", QUICK_LN if args.quick else LN_SHAPES),
                       ("gelu", QUICK_GELU if args.quick else GELU_SHAPES)):
        for name, rows, hidden in shapes:
            for mode in MODES:
                cases.append(harness.Case(
                    f"{op}_{name}_{mode}", _inputs(op, rows, hidden, dtype, mode),
                    params={"op": op, "rows": rows, "hidden": hidden, "mode": mode, "dtype": str(dtype),
                            "dropout_p": DROPOUT if op == "add_ln" else 0.0},
                    bytes=BYTES_PER_ELEMENT[op, mode] * rows * hidden * size, items={"tokens": rows}))

    def copy(inp):
        elements = BYTES_PER_ELEMENT[inp["op"], inp["mode"]] * inp["x"].numel() // 2
        src = torch.randn(elements, device=inp["x"].device, dtype=inp["x"].dtype)
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)

    def torch_eager(inp):
        return _timed(inp, lambda: _chain(inp))

    def torch_compile(inp):
        global _compiled_chain
        if not args.compile:
            raise harness.Unsupported("torch.compile is off (on by default on a GPU; --compile turns it on)")
        if _compiled_chain is None:
            _compiled_chain = torch.compile(_chain)
        return _timed(inp, lambda: _compiled_chain(inp))

    def apex(inp):
        if inp["op"] != "add_ln":
            raise harness.Unsupported("apex has no bias-GELU here")
        if importlib.util.find_spec("apex") is None or importlib.util.find_spec("apex.normalization") is None:
            raise harness.Unsupported("NVIDIA apex is not installed")
        from apex.normalization import FusedLayerNorm

        norm = FusedLayerNorm(inp["x"].shape[-1], eps=EPS).to(inp["x"].device)
        return _timed(inp, lambda: norm(inp["residual"] + F.dropout(inp["x"] + inp["bias"], DROPOUT)))

    def liger(inp):
        if inp["op"] != "add_ln":
            raise harness.Unsupported("Liger has no bias-GELU")
        if importlib.util.find_spec("liger_kernel") is None:
            raise harness.Unsupported("liger-kernel is not installed")
        from liger_kernel.transformers import LigerLayerNorm

        norm = LigerLayerNorm(inp["x"].shape[-1], eps=EPS).to(inp["x"].device)
        return _timed(inp, lambda: norm(inp["residual"] + F.dropout(inp["x"] + inp["bias"], DROPOUT)))

    def semvlp_op(inp, backend):
        if inp["op"] == "gelu":
            return _timed(inp, lambda: ops.bias_gelu(inp["x"], inp["bias"], backend=backend))
        return _timed(inp, lambda: ops.add_layer_norm(inp["x"], inp["residual"], inp["weight"], inp["ln_bias"],
                                                      x_bias=inp["bias"], dropout_p=DROPOUT, eps=EPS,
                                                      backend=backend))

    def dispatch_inputs(inp):
        if inp["op"] == "gelu":
            return dict(x=inp["x"], bias=inp["bias"], approximate="none")
        return dict(x=inp["x"], residual=inp["residual"], weight=inp["weight"], bias=inp["ln_bias"],
                    x_bias=inp["bias"], dropout_p=DROPOUT, eps=EPS, prenorm=False)

    providers = {"torch-eager": torch_eager, "copy": copy, "torch-compile": torch_compile, "apex": apex,
                 "liger": liger}
    # add_layer_norm and bias_gelu share the provider names semvlp-<backend>; the op of the case picks one.
    ln_providers = backend_providers("add_layer_norm", semvlp_op, dispatch_inputs)
    gelu_providers = backend_providers("bias_gelu", semvlp_op, dispatch_inputs)
    for name in ln_providers:
        providers[name] = _by_op(ln_providers[name], gelu_providers[name])
    return harness.Benchmark("layer_norm", cases, providers, baseline="torch-eager",
                             budget_s=20 if args.quick else 150, description=__doc__.split("\n\n")[0])


def add_arguments(p) -> None:
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="time torch.compile of the unfused chain (default on a GPU; minutes per shape on a CPU)")
    p.add_argument("--no-compile", dest="compile", action="store_false")


def _by_op(add_ln_provider, gelu_provider):
    return lambda inp: (gelu_provider if inp["op"] == "gelu" else add_ln_provider)(inp)


if __name__ == "__main__":
    raise SystemExit(harness.main(build, add_arguments))
