"""Where the time goes: torch.profiler tables for one pretraining step and for the fused ops, per backend.

    python -m bench.profile_step                          # BERT-base on a GPU (bf16), the small size on a CPU
    python -m bench.profile_step --size tiny --out p.txt  # seconds on a CPU

Targets: semvlp's pretraining step (forward, backward, fused AdamW) in two- and single-stream mode on the
batch of bench_e2e, then add_layer_norm (dropout 0.1 and 0) and packed varlen_attention fwd+bwd at the
vision-language shape (256 x 140 tokens, hidden 768 = 12 x 64) for every backend that can run them here.
For each: the wall time per call without the profiler, the profiled self CPU time and CUDA kernel time per
call, and the top ops by each. When the wall time is well above the kernel time, the host (Python, dispatch,
launches) sets the pace, not the kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch
from torch.autograd import DeviceType

from bench.bench_e2e import PEER_TASKS, SIZES, _training_step
from semvlp import ops
from semvlp.data import random_batch
from semvlp.model import SemVLPConfig, SemVLPForPretraining
from semvlp.ops import dispatch

ROWS_VL, HEADS_VL, HEAD_DIM_VL, LEN_VL = 256 * 140, 12, 64, 140


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_ms(events, calls: int) -> float:
    return sum(e.self_cpu_time_total for e in events) / calls / 1e3


def _kernel_ms(events, calls: int) -> float:
    """Device time per call, from the kernels alone: the operator rows above them carry the same time again."""
    kernels = (e for e in events if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False))
    return sum(e.self_device_time_total for e in kernels) / calls / 1e3


def profile(name: str, fn, device: torch.device, calls: int, rows: int) -> list[str]:
    """Times fn without the profiler, then profiles `calls` calls; returns the report's lines."""
    for _ in range(3):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    wall_ms = (time.perf_counter() - start) / calls * 1e3
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        _sync(device)
    events = prof.key_averages()
    cpu_ms = _cpu_ms(events, calls)
    lines = [f"== {name}: {wall_ms:.3f} ms per call (no profiler); profiled per call: self CPU {cpu_ms:.3f} ms"]
    sort_keys = ["self_cpu_time_total"]
    if device.type == "cuda":
        lines[0] += f", CUDA kernels {_kernel_ms(events, calls):.3f} ms"
        sort_keys.insert(0, "self_device_time_total")
    for key in sort_keys:
        lines += [f"-- top ops by {key} ({calls} calls)", events.table(sort_by=key, row_limit=rows)]
    return lines


def step_targets(size_name: str, batch_size: int | None, device: torch.device, dtype: torch.dtype):
    size = SIZES[size_name]
    config = SemVLPConfig(**size["model"], tasks=PEER_TASKS)  # the e2e bench's step
    batch_size = batch_size or size["batch_size"]
    batch = random_batch(config, batch_size, seed=0, text_len=size["text_len"],
                         num_regions=size["num_regions"]).to(device)
    floats = {f: getattr(batch, f).to(dtype) for f in ("region_features", "region_boxes", "mrm_feature_targets")}
    batch = dataclasses.replace(batch, **floats)
    for mode in ("two", "single"):
        torch.manual_seed(0)
        model = SemVLPForPretraining(config).to(device, dtype)
        step = _training_step(model, lambda m, mode=mode: m(batch, mode=mode).loss, 1e-4, False)
        yield f"semvlp step, {size_name}, batch {batch_size}, mode={mode}", step


def op_targets(device: torch.device, dtype: torch.dtype, rows: int, heads: int, head_dim: int, seqlen: int):
    hidden = heads * head_dim

    def leaf(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)

    x, residual, weight, bias, x_bias = leaf(rows, hidden), leaf(rows, hidden), leaf(hidden), leaf(hidden), leaf(hidden)
    dout = torch.randn(rows, hidden, device=device, dtype=dtype)
    # With and without dropout: the kernels draw one Philox number per element.
    for dropout_p in (0.1, 0.0):
        ln_inputs = dict(x=x, residual=residual, weight=weight, bias=bias, x_bias=x_bias, dropout_p=dropout_p,
                         eps=1e-12, prenorm=False)
        for backend, reasons in dispatch.explain("add_layer_norm", ln_inputs).items():
            if reasons:
                continue

            def ln_step(backend=backend, dropout_p=dropout_p):
                out = ops.add_layer_norm(x, residual, weight, bias, x_bias=x_bias, dropout_p=dropout_p,
                                         backend=backend)
                return torch.autograd.grad(out, (x, residual, weight, bias, x_bias), dout)
            yield f"add_layer_norm fwd+bwd, {rows} x {hidden}, dropout {dropout_p}, backend={backend}", ln_step

    q, k, v = (leaf(rows, heads, head_dim) for _ in range(3))
    cu = torch.arange(0, rows + 1, seqlen, device=device, dtype=torch.int32)
    att_inputs = dict(q=q, k=k, v=v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=seqlen, max_seqlen_k=seqlen,
                      dropout_p=0.0, softmax_scale=None, causal=False)
    for backend, reasons in dispatch.explain("varlen_attention", att_inputs).items():
        if reasons or backend == "reference":
            continue

        def att_step(backend=backend):
            # check_offsets=False, as the model calls it: the check copies the offsets to the host (a sync)
            out = ops.varlen_attention(q, k, v, cu, cu, seqlen, seqlen, backend=backend, check_offsets=False)
            return torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
        name = f"varlen_attention fwd+bwd, {rows // seqlen} x {seqlen} tokens, {heads} x {head_dim}"
        yield f"{name}, backend={backend}", att_step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=sorted(SIZES), default=None,
                   help="step size (default: base on a GPU, small on the CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per step (default: the size's)")
    p.add_argument("--calls", type=int, default=5, help="calls per target, timed and profiled")
    p.add_argument("--rows", type=int, default=15, help="ops per table")
    p.add_argument("--no-ops", action="store_true", help="profile the steps only")
    p.add_argument("--out", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    if args.calls < 1:
        p.error(f"--calls: expected a positive int, got {args.calls}")
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    size_name = args.size or ("base" if on_gpu else "small")
    # The op shapes: the vision-language shape on a GPU, a small one on the CPU.
    op_shape = (ROWS_VL, HEADS_VL, HEAD_DIM_VL, LEN_VL) if on_gpu else (8 * 40, 4, 16, 40)
    targets = list(step_targets(size_name, args.batch_size, device, dtype))
    if not args.no_ops:
        targets += list(op_targets(device, dtype, *op_shape))
    device_name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    lines = [f"device: {device_name}, torch {torch.__version__}, {dtype}"]
    for name, fn in targets:
        print(f"profiling {name}", file=sys.stderr, flush=True)
        try:
            lines += profile(name, fn, device, args.calls, args.rows)
        except Exception as err:  # one failing target is reported, the others still run
            lines.append(f"== {name}: FAILED: {type(err).__name__}: {err}")
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
