"""Attention forward, backward and forward+backward: every semvlp backend against PyTorch SDPA and FlashAttention.

Cases (bf16 on a GPU, float32 on the CPU; --dtype chooses):
  vl_joint      batch 256, joint text+regions length 140 with ~25% key padding, 12 heads x 64
  vl_t2r/r2t    cross-attention 20 x 36 and 36 x 20 (no padding), batch 256, 12 x 64
  long_*        1k-8k tokens, head dims 64 and 128, no padding, non-causal
each in the modes fwd (no autograd), bwd (backward only, the forward done once) and fwdbwd.
Providers:
  sdpa-mask           torch SDPA with the boolean (batch, 1, q, k) mask a padded batch needs (the baseline)
  sdpa-nomask         torch SDPA without a mask, where that is valid (no padding)
  sdpa-flash          torch SDPA restricted to its flash backend, where valid
  flash-attn          flash_attn_func / flash_attn_varlen_func (packed), when installed
  torch-varlen        torch.nn.attention.varlen.varlen_attn on the batch packed (PyTorch's FlashAttention-2
                      varlen; CUDA, fp16/bf16), where this torch has it
  flex                FlexAttention compiled with torch.compile, as its users run it; the padded batch
                      becomes a packed one with a per-sample (document) block mask
  semvlp-<backend>    semvlp.ops.attention(..., backend=<backend>) for every registered backend
  semvlp-<backend>-packed   semvlp.ops.varlen_attention on the same batch packed (vl_joint only)
  semvlp-triton-deterministic   the triton backend with torch.use_deterministic_algorithms(True): dQ by a
                      second pass instead of atomics (which of the two is faster decides the default)
TFLOP/s use 4*B*Sq*Sk*H*D for the forward (padding included, as every provider is given the padded size) and
2.5x that for the backward.

    python -m bench.bench_attention --quick          # tiny shapes on the CPU: checks that it runs
    python -m bench.bench_attention --budget 240     # GPU
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from bench import harness
from bench.semvlp_providers import backend_providers
from semvlp import ops

MODES = ("fwdbwd", "fwd", "bwd")
# (name, batch, seqlen_q, seqlen_k, nheads, head_dim, padded), most important first: the harness spends its
# budget in this order.
SHAPES = [
    ("vl_joint", 256, 140, 140, 12, 64, True),
    ("vl_t2r", 256, 20, 36, 12, 64, False),
    ("vl_r2t", 256, 36, 20, 12, 64, False),
    ("long_4k_d128", 2, 4096, 4096, 16, 128, False),
    ("long_1k_d64", 8, 1024, 1024, 16, 64, False),
    ("long_2k_d128", 4, 2048, 2048, 16, 128, False),
    ("long_8k_d64", 1, 8192, 8192, 16, 64, False),
    ("long_8k_d128", 1, 8192, 8192, 16, 128, False),
]
QUICK_SHAPES = [("vl_joint", 4, 30, 30, 2, 32, True), ("vl_t2r", 4, 7, 11, 2, 32, False),
                ("long_4k_d128", 1, 64, 64, 2, 128, False)]
# The reference materialises fp32 scores and probabilities: skipped where they exceed this many elements.
REFERENCE_MAX_SCORES = 2**31


def flops(batch, seqlen_q, seqlen_k, nheads, head_dim, mode) -> float:
    forward = 4.0 * batch * seqlen_q * seqlen_k * nheads * head_dim
    return {"fwd": forward, "bwd": 2.5 * forward, "fwdbwd": 3.5 * forward}[mode]


def _inputs(batch, seqlen_q, seqlen_k, nheads, head_dim, padded, dtype, mode):
    def make(device):
        def leaf(s):
            return torch.randn(batch, s, nheads, head_dim, device=device, dtype=dtype, requires_grad=True)

        q, k, v = leaf(seqlen_q), leaf(seqlen_k), leaf(seqlen_k)
        inp = {"q": q, "k": k, "v": v, "dout": torch.randn_like(q), "mask": None, "mode": mode,
               "shape": (batch, seqlen_q, seqlen_k)}
        if padded:
            # Lengths uniform in [seqlen/2, seqlen]: about 25% of the keys are padding.
            lengths = torch.randint(seqlen_k // 2, seqlen_k + 1, (batch,))
            inp["mask"] = (torch.arange(seqlen_k)[None, :] < lengths[:, None]).to(device)
            inp["lengths"] = lengths
        return inp
    return make


def _timed(inp, forward, mode):
    """The callable to time for `mode`, given forward() -> output (q/k/v are the leaves)."""
    leaves = (inp["q"], inp["k"], inp["v"])
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return forward()
        return run
    if mode == "bwd":
        out = forward()
        return lambda: torch.autograd.grad(out, leaves, inp["dout"], retain_graph=True)
    return lambda: torch.autograd.grad(forward(), leaves, inp["dout"])


def _dispatch_inputs(inp):
    return dict(q=inp["q"], k=inp["k"], v=inp["v"], attention_mask=inp["mask"], dropout_p=0.0, softmax_scale=None,
                causal=False)


def _packed(inp):
    """The padded batch as packed segments (self-attention over each sample's real tokens), built once."""
    if "packed" not in inp:
        mask = inp["mask"]
        lengths = inp["lengths"].to(torch.int32)
        cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32)
        cu[1:] = lengths.cumsum(0)
        inp["packed"] = {name: inp[name].detach()[mask].requires_grad_() for name in ("q", "k", "v")}
        inp["packed"].update(cu=cu.to(mask.device), max_seqlen=int(lengths.max()), dout=inp["dout"][mask])
    return inp["packed"]


def _sdpa(inp, mask):
    def forward():
        q, k, v = (t.transpose(1, 2) for t in (inp["q"], inp["k"], inp["v"]))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    return forward


def build(args) -> harness.Benchmark:
    """Attention fwd / bwd / fwd+bwd on vision-language and long shapes."""
    on_gpu = args.device.type == "cuda"
    dtype = getattr(torch, args.dtype) if args.dtype else torch.bfloat16 if on_gpu else torch.float32
    cases = []
    for name, batch, seqlen_q, seqlen_k, nheads, head_dim, padded in (QUICK_SHAPES if args.quick else SHAPES):
        for mode in MODES:
            cases.append(harness.Case(
                f"{name}_{mode}", _inputs(batch, seqlen_q, seqlen_k, nheads, head_dim, padded, dtype, mode),
                params={"batch": batch, "seqlen_q": seqlen_q, "seqlen_k": seqlen_k, "nheads": nheads,
                        "head_dim": head_dim, "key_padding": padded, "mode": mode, "dtype": str(dtype)},
                flops=flops(batch, seqlen_q, seqlen_k, nheads, head_dim, mode),
                items={"tokens": batch * seqlen_q}))

    def sdpa_mask(inp):
        batch, seqlen_q, seqlen_k = inp["shape"]
        mask = inp["mask"]
        mask = (torch.ones(batch, seqlen_k, dtype=torch.bool, device=inp["q"].device) if mask is None else mask)
        return _timed(inp, _sdpa(inp, mask[:, None, None, :].expand(batch, 1, seqlen_q, seqlen_k)), inp["mode"])

    def sdpa_nomask(inp):
        if inp["mask"] is not None:
            raise harness.Unsupported("the batch has key padding: SDPA needs a mask here")
        return _timed(inp, _sdpa(inp, None), inp["mode"])

    def sdpa_flash(inp):
        if inp["mask"] is not None:
            raise harness.Unsupported("the flash backend of SDPA takes no mask")
        if not on_gpu:
            raise harness.Unsupported("SDPA's flash backend needs a GPU")
        from torch.nn.attention import SDPBackend, sdpa_kernel

        forward = _sdpa(inp, None)

        def flash_forward():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return forward()
        return _timed(inp, flash_forward, inp["mode"])

    def flash_attn(inp):
        if importlib.util.find_spec("flash_attn") is None:
            raise harness.Unsupported("flash-attn is not installed")
        from flash_attn import flash_attn_func, flash_attn_varlen_func

        if inp["mask"] is None:
            return _timed(inp, lambda: flash_attn_func(inp["q"], inp["k"], inp["v"]), inp["mode"])
        packed = _packed(inp)
        return _packed_timed(packed, lambda: flash_attn_varlen_func(
            packed["q"], packed["k"], packed["v"], packed["cu"], packed["cu"], packed["max_seqlen"],
            packed["max_seqlen"]), inp["mode"])

    def semvlp_padded(inp, backend):
        batch, seqlen_q, seqlen_k = inp["shape"]
        if backend == "reference" and batch * inp["q"].shape[2] * seqlen_q * seqlen_k > REFERENCE_MAX_SCORES:
            raise harness.Unsupported(f"the reference would materialise more than {REFERENCE_MAX_SCORES} scores")
        return _timed(inp, lambda: ops.attention(inp["q"], inp["k"], inp["v"], attention_mask=inp["mask"],
                                                 backend=backend), inp["mode"])

    def semvlp_packed(inp, backend):
        packed = _packed(inp)
        return _packed_timed(packed, lambda: ops.varlen_attention(
            packed["q"], packed["k"], packed["v"], packed["cu"], packed["cu"], packed["max_seqlen"],
            packed["max_seqlen"], backend=backend, check_offsets=False), inp["mode"])

    def packed_dispatch_inputs(inp):
        if inp["mask"] is None:
            raise harness.Unsupported("only the padded vision-language batch is also run packed")
        packed = _packed(inp)
        return dict(q=packed["q"], k=packed["k"], v=packed["v"], cu_seqlens_q=packed["cu"], cu_seqlens_k=packed["cu"],
                    max_seqlen_q=packed["max_seqlen"], max_seqlen_k=packed["max_seqlen"], dropout_p=0.0,
                    softmax_scale=None, causal=False)

    def torch_varlen(inp):
        if importlib.util.find_spec("torch.nn.attention.varlen") is None:
            raise harness.Unsupported("this torch has no torch.nn.attention.varlen")
        if not on_gpu or dtype not in (torch.float16, torch.bfloat16):
            raise harness.Unsupported("varlen_attn needs a CUDA GPU and fp16/bf16 inputs")
        from torch.nn.attention.varlen import varlen_attn

        packed = _packed_or_whole(inp)
        return _packed_timed(packed, lambda: varlen_attn(
            packed["q"], packed["k"], packed["v"], packed["cu"], packed["cu_k"], packed["max_seqlen"],
            packed["max_seqlen_k"]), inp["mode"])

    def flex(inp):
        if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
            raise harness.Unsupported("this torch has no FlexAttention")
        if not on_gpu:
            raise harness.Unsupported("FlexAttention has no backward on the CPU; it is timed on a GPU")
        return _timed(inp, _flex_forward(inp), inp["mode"]) if inp["mask"] is None else \
            _packed_timed(_packed(inp), _flex_forward_packed(_packed(inp)), inp["mode"])

    providers = {"sdpa-mask": sdpa_mask, "sdpa-nomask": sdpa_nomask, "sdpa-flash": sdpa_flash,
                 "flash-attn": flash_attn, "torch-varlen": torch_varlen, "flex": flex}
    providers.update(backend_providers("attention", semvlp_padded, _dispatch_inputs))
    packed = backend_providers("varlen_attention", semvlp_packed, packed_dispatch_inputs)
    providers.update({f"{name}-packed": p for name, p in packed.items()})
    if "semvlp-triton" in providers:
        providers["semvlp-triton-deterministic"] = _deterministic(providers["semvlp-triton"])
    return harness.Benchmark("attention", cases, providers, baseline="sdpa-mask",
                             budget_s=20 if args.quick else 300, description=__doc__.split("\n\n")[0])


def _deterministic(provider):
    """The provider under torch.use_deterministic_algorithms(True): the backward without atomics."""
    def wrapped(inp):
        fn = provider(inp)

        def run():
            previous = torch.are_deterministic_algorithms_enabled()
            torch.use_deterministic_algorithms(True, warn_only=True)
            try:
                return fn()
            finally:
                torch.use_deterministic_algorithms(previous)
        return run
    return wrapped


def _packed_or_whole(inp):
    """The packed form of the batch: its real tokens when it has padding, else every sample whole."""
    if inp["mask"] is not None:
        packed = _packed(inp)
        return {**packed, "cu_k": packed["cu"], "max_seqlen_k": packed["max_seqlen"]}
    batch, seqlen_q, seqlen_k = inp["shape"]
    device = inp["q"].device

    def offsets(length):
        return torch.arange(0, (batch + 1) * length, length, dtype=torch.int32, device=device)

    flat = {name: inp[name].detach().flatten(0, 1).requires_grad_() for name in ("q", "k", "v")}
    return {**flat, "cu": offsets(seqlen_q), "cu_k": offsets(seqlen_k), "max_seqlen": seqlen_q,
            "max_seqlen_k": seqlen_k, "dout": inp["dout"].flatten(0, 1)}


def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex_forward(inp):
    """FlexAttention over the whole (unpadded) batch: no block mask."""
    flex_attention = _compiled_flex()

    def forward():
        q, k, v = (t.transpose(1, 2) for t in (inp["q"], inp["k"], inp["v"]))
        return flex_attention(q, k, v).transpose(1, 2)
    return forward


def _flex_forward_packed(packed):
    """FlexAttention over the packed tokens as one sequence, a block mask keeping each sample to itself."""
    from torch.nn.attention.flex_attention import create_block_mask

    flex_attention = _compiled_flex()
    total = packed["q"].shape[0]
    lengths = packed["cu"][1:] - packed["cu"][:-1]
    sample = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths.long())

    def same_sample(b, h, q_idx, kv_idx):
        return sample[q_idx] == sample[kv_idx]

    block_mask = create_block_mask(same_sample, None, None, total, total, device=packed["q"].device)

    def forward():
        q, k, v = (t.transpose(0, 1)[None] for t in (packed["q"], packed["k"], packed["v"]))
        return flex_attention(q, k, v, block_mask=block_mask)[0].transpose(0, 1)
    return forward


def _packed_timed(packed, forward, mode):
    return _timed({"q": packed["q"], "k": packed["k"], "v": packed["v"], "dout": packed["dout"]}, forward, mode)


def add_arguments(p) -> None:
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="input dtype (default: bfloat16 on a GPU, float32 on the CPU)")


if __name__ == "__main__":
    raise SystemExit(harness.main(build, add_arguments))
