"""Host cost per call: every public op and `semvlp.nn` module against the PyTorch call doing the same job.

Tiny tensors, so the time is what the host spends (Python, argument checks, backend choice, dispatcher,
autograd bookkeeping), not arithmetic. Every device is timed on the host clock without synchronising: on a
GPU that is the time to enqueue the work. Cases, each `<target>_fwd` (inference: no grad, no dropout) and
`<target>_fwd_bwd` (training: forward and backward, dropout where the op or module has it):

  layer_norm        ops.layer_norm                  vs F.layer_norm
  add_layer_norm    ops.add_layer_norm (x_bias)     vs F.layer_norm(residual + F.dropout(x + x_bias))
  bias_gelu         ops.bias_gelu                   vs F.gelu(x + bias)
  attention         ops.attention, bool key mask    vs SDPA with that mask (transposed in and out)
  varlen_attention  ops.varlen_attention            vs torch.nn.attention.varlen.varlen_attn where it runs
                                                       (CUDA), else segments padded, SDPA, packed back
  nn_layer_norm     semvlp.nn.LayerNorm             vs torch.nn.LayerNorm
  nn_self_attention semvlp.nn.PackedSelfAttention   vs the same layers from torch.nn and the attention above
  nn_cross_attention semvlp.nn.PackedCrossAttention vs the same
  nn_feed_forward   semvlp.nn.FeedForward           vs Linear, GELU, Linear, dropout, residual, LayerNorm
  step_single, step_two   one pretraining step (zero_grad, forward, backward, fused AdamW) of the tiny model
                          of bench_e2e, semvlp only (no PyTorch equivalent)

Providers: torch (baseline) and semvlp. Each timing runs a target `calls_per_timing` times; rows carry
`us_per_call`. Runs with one CPU thread unless --threads says otherwise; the JSON records the CPU capability.

    python -m bench.bench_overhead --quick        # four cases, seconds
    python -m bench.bench_overhead --rounds 7     # the table in bench/NOTES.md
"""

from __future__ import annotations

import dataclasses
import signal
import sys

import torch
import torch.nn.functional as F
from torch import nn

from bench import harness
from bench.bench_e2e import PEER_TASKS, SIZES, _training_step
from semvlp import ops
from semvlp.data import random_batch
from semvlp.model import SemVLPConfig, SemVLPForPretraining
from semvlp.nn import FeedForward, LayerNorm, PackedCrossAttention, PackedSelfAttention

TIMER = "host_wall_clock_median"
# Tiny shapes: 3 packed segments of 3, 5 and 8 tokens, hidden 32 = 2 heads x 16.
LENGTHS, HEADS, HEAD_DIM, FFN = (3, 5, 8), 2, 16, 64
HIDDEN = HEADS * HEAD_DIM
DROPOUT = 0.1
# --quick: one case of each kind (op forward, op training, module training, step)
QUICK_CASES = ("layer_norm_fwd", "attention_fwd_bwd", "nn_feed_forward_fwd_bwd", "step_two")


def add_arguments(p) -> None:
    p.add_argument("--repeat", type=int, default=None,
                   help="calls of a target per timing (default: 20 for ops and modules, 1 for steps; 2 with --quick)")


def _varlen_attn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def torch_varlen_attention(q, k, v, cu_q, cu_k, max_q: int, max_k: int) -> torch.Tensor:
    """Packed attention as plain PyTorch does it: torch's varlen FlashAttention on CUDA half precision, else
    every segment padded, SDPA with the key-padding mask, the real queries packed back."""
    varlen_attn = _varlen_attn()
    if varlen_attn is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k)
    lengths_q, lengths_k = cu_q.diff(), cu_k.diff()
    valid_q = torch.arange(max_q, device=q.device) < lengths_q[:, None]
    valid_k = torch.arange(max_k, device=q.device) < lengths_k[:, None]
    q_pad = q.new_zeros(valid_q.shape + q.shape[1:])
    k_pad, v_pad = (k.new_zeros(valid_k.shape + k.shape[1:]) for _ in range(2))
    q_pad[valid_q], k_pad[valid_k], v_pad[valid_k] = q, k, v
    out = F.scaled_dot_product_attention(q_pad.transpose(1, 2), k_pad.transpose(1, 2), v_pad.transpose(1, 2),
                                         attn_mask=valid_k[:, None, None, :])
    return out.transpose(1, 2)[valid_q]


def torch_equivalent_of_varlen(device: torch.device, dtype: torch.dtype) -> str:
    if _varlen_attn() is not None and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return "torch.nn.attention.varlen.varlen_attn"
    return "segments padded, SDPA with the key-padding mask, packed back"


class TorchSelfAttention(nn.Module):
    """PackedSelfAttention written with torch.nn: fused QKV, packed attention, projection, dropout, residual,
    LayerNorm."""

    def __init__(self, hidden: int, heads: int, dropout: float, eps: float = 1e-12):
        super().__init__()
        self.heads, self.qkv, self.dense = heads, nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.dropout, self.norm = nn.Dropout(dropout), nn.LayerNorm(hidden, eps=eps)

    def forward(self, hidden, cu_seqlens, max_seqlen):
        q, k, v = self.qkv(hidden).view(hidden.shape[0], 3, self.heads, -1).unbind(dim=1)
        context = torch_varlen_attention(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen)
        return self.norm(hidden + self.dropout(self.dense(context.reshape(hidden.shape))))


class TorchCrossAttention(nn.Module):
    """PackedCrossAttention written with torch.nn."""

    def __init__(self, hidden: int, heads: int, dropout: float, eps: float = 1e-12):
        super().__init__()
        self.heads, self.query, self.key_value = heads, nn.Linear(hidden, hidden), nn.Linear(hidden, 2 * hidden)
        self.dense, self.dropout = nn.Linear(hidden, hidden), nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, hidden, kv_index, cu_q, cu_k, max_q, max_k):
        q = self.query(hidden).view(hidden.shape[0], self.heads, -1)
        k, v = self.key_value(hidden).index_select(0, kv_index).view(-1, 2, self.heads, q.shape[-1]).unbind(dim=1)
        context = torch_varlen_attention(q, k, v, cu_q, cu_k, max_q, max_k)
        return self.norm(hidden + self.dropout(self.dense(context.reshape(hidden.shape))))


class TorchFeedForward(nn.Module):
    """FeedForward written with torch.nn."""

    def __init__(self, hidden: int, ffn: int, dropout: float, eps: float = 1e-12):
        super().__init__()
        self.intermediate, self.output = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.dropout, self.norm = nn.Dropout(dropout), nn.LayerNorm(hidden, eps=eps)

    def forward(self, hidden):
        return self.norm(hidden + self.dropout(self.output(F.gelu(self.intermediate(hidden)))))


def _cu_seqlens(lengths, device) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)


def _cross_layout(device):
    """Segments 0 and 2 are text and regions of one sample, segment 1 text of another with no regions:
    every token queries the other modality of its sample (the empty key segment included)."""
    cu_q = _cu_seqlens(LENGTHS, device)
    starts = cu_q.tolist()
    keys = [list(range(starts[2], starts[3])), [], list(range(starts[0], starts[1]))]
    kv_index = torch.tensor([i for seg in keys for i in seg], dtype=torch.long, device=device)
    return kv_index, cu_q, _cu_seqlens([len(s) for s in keys], device), max(LENGTHS), max(map(len, keys))


def _repeated(fn, n: int):
    def run():
        for _ in range(n):
            fn()
    return run


def build(args) -> harness.Benchmark:
    """Host cost per call of the public ops and semvlp.nn modules against PyTorch, and of one pretraining step."""
    device = args.device  # the harness times on the host clock, so it is handed the CPU; tensors go here
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    repeat = args.repeat or (2 if args.quick else 20)
    step_repeat = args.repeat or 1
    total = sum(LENGTHS)

    def randn(*shape, grad=False):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=grad)

    def op_inputs(train: bool):
        def make(_host):
            cu = _cu_seqlens(LENGTHS, device)
            mask = torch.arange(max(LENGTHS), device=device) < torch.tensor(LENGTHS, device=device)[:, None]
            return {
                "train": train, "x": randn(total, HIDDEN, grad=train), "residual": randn(total, HIDDEN, grad=train),
                "weight": randn(HIDDEN, grad=train), "bias": randn(HIDDEN, grad=train),
                "x_bias": randn(HIDDEN, grad=train), "dy": randn(total, HIDDEN),
                "h": randn(total, FFN, grad=train), "h_bias": randn(FFN, grad=train), "dh": randn(total, FFN),
                "q": randn(len(LENGTHS), max(LENGTHS), HEADS, HEAD_DIM, grad=train),
                "k": randn(len(LENGTHS), max(LENGTHS), HEADS, HEAD_DIM, grad=train),
                "v": randn(len(LENGTHS), max(LENGTHS), HEADS, HEAD_DIM, grad=train), "mask": mask,
                "dq": randn(len(LENGTHS), max(LENGTHS), HEADS, HEAD_DIM),
                "pq": randn(total, HEADS, HEAD_DIM, grad=train), "pk": randn(total, HEADS, HEAD_DIM, grad=train),
                "pv": randn(total, HEADS, HEAD_DIM, grad=train), "dp": randn(total, HEADS, HEAD_DIM), "cu": cu,
            }
        return make

    def timed(inp, forward, grad_name):
        """The call to time: forward without autograd, or forward + backward with the given output gradient."""
        if not inp["train"]:
            def run():
                with torch.no_grad():
                    forward()
            return _repeated(run, repeat)
        return _repeated(lambda: forward().backward(inp[grad_name]), repeat)

    def p(inp):
        return DROPOUT if inp["train"] else 0.0

    # target -> (torch callable builder, semvlp callable builder, output gradient name)
    op_targets = {
        "layer_norm": (
            lambda i: lambda: F.layer_norm(i["x"], (HIDDEN,), i["weight"], i["bias"], 1e-12),
            lambda i: lambda: ops.layer_norm(i["x"], i["weight"], i["bias"], 1e-12), "dy"),
        "add_layer_norm": (
            lambda i: lambda: F.layer_norm(i["residual"] + F.dropout(i["x"] + i["x_bias"], p(i), training=True),
                                           (HIDDEN,), i["weight"], i["bias"], 1e-12),
            lambda i: lambda: ops.add_layer_norm(i["x"], i["residual"], i["weight"], i["bias"], x_bias=i["x_bias"],
                                                 dropout_p=p(i), eps=1e-12), "dy"),
        "bias_gelu": (
            lambda i: lambda: F.gelu(i["h"] + i["h_bias"]),
            lambda i: lambda: ops.bias_gelu(i["h"], i["h_bias"]), "dh"),
        "attention": (
            lambda i: lambda: F.scaled_dot_product_attention(
                i["q"].transpose(1, 2), i["k"].transpose(1, 2), i["v"].transpose(1, 2),
                attn_mask=i["mask"][:, None, None, :]).transpose(1, 2),
            lambda i: lambda: ops.attention(i["q"], i["k"], i["v"], attention_mask=i["mask"]), "dq"),
        # check_offsets=False as the model calls it (its offsets are validated once, by PackedLayout)
        "varlen_attention": (
            lambda i: lambda: torch_varlen_attention(i["pq"], i["pk"], i["pv"], i["cu"], i["cu"], max(LENGTHS),
                                                     max(LENGTHS)),
            lambda i: lambda: ops.varlen_attention(i["pq"], i["pk"], i["pv"], i["cu"], i["cu"], max(LENGTHS),
                                                   max(LENGTHS), check_offsets=False), "dp"),
    }

    def module_inputs(train: bool):
        def make(_host):
            return {"train": train, "x": randn(total, HIDDEN, grad=train), "dy": randn(total, HIDDEN),
                    "cu": _cu_seqlens(LENGTHS, device), "cross": _cross_layout(device)}
        return make

    def module(make, inp):
        torch.manual_seed(0)
        return make().to(device, dtype).train(inp["train"])

    module_targets = {
        "nn_layer_norm": (lambda: nn.LayerNorm(HIDDEN, eps=1e-12), lambda: LayerNorm(HIDDEN, eps=1e-12),
                          lambda m, i: m(i["x"])),
        "nn_self_attention": (lambda: TorchSelfAttention(HIDDEN, HEADS, DROPOUT),
                              lambda: PackedSelfAttention(HIDDEN, HEADS, hidden_dropout=DROPOUT),
                              lambda m, i: m(i["x"], i["cu"], max(LENGTHS))),
        "nn_cross_attention": (lambda: TorchCrossAttention(HIDDEN, HEADS, DROPOUT),
                               lambda: PackedCrossAttention(HIDDEN, HEADS, hidden_dropout=DROPOUT),
                               lambda m, i: m(i["x"], *i["cross"])),
        "nn_feed_forward": (lambda: TorchFeedForward(HIDDEN, FFN, DROPOUT),
                            lambda: FeedForward(HIDDEN, FFN, dropout=DROPOUT),
                            lambda m, i: m(i["x"])),
    }

    size = SIZES["tiny"]
    config = SemVLPConfig(**size["model"], tasks=PEER_TASKS)

    def step_inputs(mode):
        def make(_host):
            batch = random_batch(config, size["batch_size"], seed=0, text_len=size["text_len"],
                                 num_regions=size["num_regions"]).to(device)
            floats = {f: getattr(batch, f).to(dtype) for f in ("region_features", "region_boxes",
                                                               "mrm_feature_targets")}
            return {"mode": mode, "batch": dataclasses.replace(batch, **floats)}
        return make

    def torch_provider(inp):
        if "mode" in inp:
            raise harness.Unsupported("no PyTorch equivalent: semvlp's own pretraining step")
        kind, target = inp["target"]
        if kind == "op":
            return timed(inp["inputs"], op_targets[target][0](inp["inputs"]), op_targets[target][2])
        m = module(module_targets[target][0], inp["inputs"])
        return timed(inp["inputs"], lambda: module_targets[target][2](m, inp["inputs"]), "dy")

    def semvlp_provider(inp):
        if "mode" in inp:
            torch.manual_seed(0)
            model = SemVLPForPretraining(config).to(device, dtype)
            step = _training_step(model, lambda m: m(inp["batch"], mode=inp["mode"]).loss, 1e-4, False)
            return _repeated(step, step_repeat)
        kind, target = inp["target"]
        if kind == "op":
            return timed(inp["inputs"], op_targets[target][1](inp["inputs"]), op_targets[target][2])
        m = module(module_targets[target][1], inp["inputs"])
        return timed(inp["inputs"], lambda: module_targets[target][2](m, inp["inputs"]), "dy")

    common = {"dtype": str(dtype).replace("torch.", ""), "segments": list(LENGTHS), "hidden": HIDDEN,
              "heads": HEADS, "head_dim": HEAD_DIM, "ffn": FFN}
    varlen_equivalent = torch_equivalent_of_varlen(device, dtype)
    # The steps first: their models take the longest to build, and the budget is shared out in order.
    cases = [harness.Case(f"step_{mode}", step_inputs(mode),
                          params={"size": "tiny", "mode": mode, "batch_size": size["batch_size"],
                                  "dtype": common["dtype"], "calls_per_timing": step_repeat})
             for mode in ("single", "two")]
    for kind, targets, inputs in (("op", op_targets, op_inputs), ("module", module_targets, module_inputs)):
        for target in targets:
            for train in (False, True):
                def make(host, kind=kind, target=target, train=train, inputs=inputs):
                    return {"target": (kind, target), "inputs": inputs(train)(host)}
                params = {**common, "target": target, "backward": train, "dropout": DROPOUT if train else 0.0,
                          "calls_per_timing": repeat}
                if "attention" in target and target != "attention":
                    params["torch_attention"] = varlen_equivalent
                cases.append(harness.Case(f"{target}_{'fwd_bwd' if train else 'fwd'}", make, params=params))
    if args.quick:
        cases = [c for c in cases if c.name in QUICK_CASES]
    return harness.Benchmark("overhead", cases, {"torch": torch_provider, "semvlp": semvlp_provider},
                             baseline="torch", budget_s=20 if args.quick else 240, rounds=1 if args.quick else 5,
                             description="host cost per call (µs), tiny tensors: semvlp ops and modules vs PyTorch")


def add_per_call(record: dict) -> None:
    """`us_per_call` (median, q20, q80) on every timed row: a timing covers `calls_per_timing` calls."""
    for row in record["results"]:
        if row["status"] == "ok":
            n = row["params"]["calls_per_timing"]
            for suffix in ("", "_q20", "_q80"):
                row[f"us_per_call{suffix}"] = row[f"time_ms{suffix}"] * 1e3 / n


def main(argv: list[str] | None = None) -> int:
    """harness.main, except that every device is timed on the host clock (enqueue time, never a device sync)."""
    p = harness.parser(__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads: expected a positive count, got {args.threads}")
    if args.repeat is not None and args.repeat < 1:
        p.error(f"--repeat: expected a positive count, got {args.repeat}")
    torch.set_num_threads(args.threads or 1)
    benchmark = build(args)
    def split(text):
        return None if text is None else [x for x in text.split(",") if x]

    previous = signal.signal(signal.SIGTERM, harness._raise_interrupted)
    try:
        record = harness.run(benchmark, "cpu", budget_s=args.budget, providers=split(args.providers),
                             cases=split(args.cases), rounds=args.rounds, calls=args.calls, strict=args.strict)
    finally:
        signal.signal(signal.SIGTERM, previous)
    record["env"] = {**harness.environment(args.device), "timer": TIMER,
                     "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    add_per_call(record)
    print("\n".join(harness.summary_lines(record)))
    if not args.no_save:
        print(f"results: {harness.save(record, args.out_dir)}")
    sys.stdout.flush()
    return int(any(r["status"] == "error" for r in record["results"]))


if __name__ == "__main__":
    raise SystemExit(main())
