"""Compiles every Triton kernel of semvlp for Hopper (sm_90) without a GPU and prints one JSON line per kernel.

Run as a script with TRITON_INTERPRET unset (under the interpreter `triton.jit` gives interpreted functions,
which cannot be compiled): `python tests/kernels/hopper_compile.py bfloat16 [--all-configs]`. Arguments are
built by the launchers' own argument builders on meta tensors, so the compiled signatures are the launched ones.
"""

import argparse
import json
import sys
import time

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from semvlp.kernels import attention, bias_gelu, layer_norm

HOPPER = GPUTarget("cuda", 90, 32)
# Shared memory one H100 block can use (227 KiB).
HOPPER_MAX_SHARED = 232448
_POINTER_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "i8",
                  torch.int32: "i32", torch.bool: "i1"}


def signature(kernel, args: dict) -> tuple[dict, dict]:
    sig, constexprs = {}, {}
    for param in kernel.params:
        value = args[param.name]
        if param.is_constexpr:
            sig[param.name] = "constexpr"
            constexprs[param.name] = value
        elif isinstance(value, torch.Tensor):
            sig[param.name] = "*" + _POINTER_TYPES[value.dtype]
        elif isinstance(value, bool):
            sig[param.name] = "i1"
        elif isinstance(value, int):
            sig[param.name] = "i32" if -2**31 <= value < 2**31 else "i64"
        elif isinstance(value, float):
            sig[param.name] = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}.{param.name}: no signature type for {type(value).__name__}")
    return sig, constexprs


def compile_one(name: str, kernel, args: dict, num_warps: int, num_stages: int) -> dict:
    sig, constexprs = signature(kernel, args)
    start = time.time()
    compiled = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs), target=HOPPER,
                              options={"num_warps": num_warps, "num_stages": num_stages})
    shared = compiled.metadata.shared
    if shared > HOPPER_MAX_SHARED:
        raise RuntimeError(f"{name}: needs {shared} bytes of shared memory, Hopper allows {HOPPER_MAX_SHARED}")
    return {"kernel": name, "shared": shared, "seconds": round(time.time() - start, 2), "cubin": "cubin" in compiled.asm}


def _tunable(configs, dtype):
    """The autotune configs that short or long sequences of this dtype can pick."""
    fp32 = dtype == torch.float32
    return [c for c in configs if any(attention._fits(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], n, n, fp32)
                                      for n in (attention.SHORT_BUCKET, 8192))]


def attention_cases(dtype, all_configs: bool):
    """(name, kernel, args, configs) with every flag on (padded layout) and the packed layout. dK/dV compile
    with the dQ atomics on; the deterministic variant is the same code without them."""
    meta = dict(device="meta", dtype=dtype)
    for varlen in (False, True):
        if varlen:
            q = torch.empty(300, 12, 64, **meta)
            k = v = torch.empty(280, 12, 64, **meta)
            cu = torch.empty(9, dtype=torch.int32, device="meta")
            pb = attention.Problem(q, k, v, None, cu, cu, 140, 140, 0.125, False, 0.0, 0, 0)
        else:
            q = torch.empty(4, 140, 12, 80, **meta)
            k = v = torch.empty(4, 140, 12, 80, **meta)
            mask = torch.empty(4, 140, dtype=torch.bool, device="meta")
            pb = attention.Problem(q, k, v, mask, None, None, 0, 0, 0.125, True, 0.1, 2**40 + 3, 2**31 + 5)
        out, dout = torch.empty_like(q), torch.empty_like(q)
        stats = torch.empty(pb.n_segments, pb.nheads, pb.seqlen_q, dtype=torch.float32, device="meta")
        short, long = (attention.default_config(n, n, 128, False, dtype) for n in (140, 1024))
        fwd_configs = [short] if short == long else [short, long]
        bwd_configs = [attention.default_config(140, 140, 128, True, dtype)]
        if all_configs:
            fwd_configs = _tunable(attention.FWD_CONFIGS, dtype)
            bwd_configs = _tunable(attention.BWD_CONFIGS, dtype)
        tag = "varlen" if varlen else "padded_mask_causal_dropout"
        yield f"attn_fwd[{tag}]", attention._attn_fwd, attention.forward_args(pb, q, k, v, out, stats), fwd_configs
        dq32 = torch.empty(q.shape, dtype=torch.float32, device="meta")
        yield (f"attn_bwd_dkdv[{tag},atomic]", attention._attn_bwd_dkdv,
               attention.dkdv_args(pb, q, k, v, dout, dq32, k, v, stats, stats, True), bwd_configs)
        yield f"attn_bwd_dq[{tag}]", attention._attn_bwd_dq, attention.dq_args(pb, q, k, v, dout, q, stats, stats), \
            bwd_configs
        yield (f"attn_bwd_preprocess[{tag}]", attention._attn_bwd_preprocess,
               attention.preprocess_args(pb, out, dout, stats), [{"num_warps": 4, "num_stages": 1}])


def _launch_case(name, launch):
    return name, launch.kernel, launch.args, [{"num_warps": launch.num_warps, "num_stages": launch.num_stages}]


def row_op_cases(dtype):
    meta = dict(device="meta", dtype=dtype)
    for hidden in (768, 8192):
        x = torch.empty(64, hidden, **meta)
        w = torch.empty(hidden, device="meta", dtype=torch.float32)
        fwd = layer_norm.forward_launch(x, x, w, w, torch.empty(hidden, **meta), 0.1, 1e-12, 2**40, 2**31, True)[0]
        yield _launch_case(f"add_layer_norm_fwd[{hidden},all]", fwd)
        plain = layer_norm.forward_launch(x, None, None, None, None, 0.0, 1e-12, 0, 0, False)[0]
        yield _launch_case(f"add_layer_norm_fwd[{hidden},plain]", plain)
        bwd = layer_norm.backward_launch(x, x, x, w, 1e-12, 0.1, 2**40, 2**31)[0]
        yield _launch_case(f"add_layer_norm_bwd[{hidden},all]", bwd)
        bwd_plain = layer_norm.backward_launch(x, None, x, None, 1e-12, 0.0, 0, 0)[0]
        yield _launch_case(f"add_layer_norm_bwd[{hidden},plain]", bwd_plain)
    x = torch.empty(64, 3072, **meta)
    b = torch.empty(3072, **meta)
    for approximate in bias_gelu.APPROXIMATIONS:
        yield _launch_case(f"bias_gelu_fwd[{approximate}]", bias_gelu.forward_launch(x, b, approximate)[0])
        yield _launch_case(f"bias_gelu_bwd[{approximate}]", bias_gelu.backward_launch(x, x, b, approximate)[0])


def dtype_free_cases():
    mask_args = dict(MASK=torch.empty(1, dtype=torch.int8, device="meta"), p_drop=0.1, seed=2**40, offset=-5,
                     nheads=12, seqlen_q=140, seqlen_k=140, BLOCK_M=32, BLOCK_N=32)
    yield "attn_keep_mask", attention._keep_mask_kernel, mask_args, [{"num_warps": 4, "num_stages": 1}]
    ln_args = dict(MASK=mask_args["MASK"], p_drop=0.1, seed=2**40, offset=-5, n_rows=64, hidden=768, BLOCK_R=16,
                   BLOCK_N=1024)
    yield "rowwise_keep_mask", layer_norm._keep_mask_kernel, ln_args, [{"num_warps": 4, "num_stages": 1}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dtype", choices=["float32", "float16", "bfloat16", "none"],
                        help="kernel dtype; 'none' compiles the dtype-free kernels")
    parser.add_argument("--all-configs", action="store_true", help="every attention autotune config")
    args = parser.parse_args()
    if args.dtype == "none":
        cases = list(dtype_free_cases())
    else:
        dtype = getattr(torch, args.dtype)
        cases = list(attention_cases(dtype, args.all_configs)) + list(row_op_cases(dtype))
    for name, kernel, kernel_args, configs in cases:
        for config in configs:
            if isinstance(config, triton.Config):
                config = {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
            extra = {k: config[k] for k in ("BLOCK_M", "BLOCK_N") if k in config}
            result = compile_one(name, kernel, {**kernel_args, **extra}, config["num_warps"], config["num_stages"])
            print(json.dumps({**result, **extra, "dtype": args.dtype}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
