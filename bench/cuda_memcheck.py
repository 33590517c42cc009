"""Runs every CUDA kernel of semvlp._C once on small awkward shapes, for compute-sanitizer.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \
        python bench/cuda_memcheck.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python bench/cuda_memcheck.py
    compute-sanitizer --tool synccheck --error-exitcode 1 python bench/cuda_memcheck.py

PYTORCH_NO_CUDA_MEMORY_CACHING=1 gives every tensor its own allocation, so an access just past a tensor's end
is reported (inside the caching allocator's pooled blocks it would not be). The cases cover lengths 1,
primes, empty query and key segments, q != k (20 x 36 cross-attention), causal, dropout, strided views, every
head dim and dtype; LayerNorm with hidden 1, 33, 768 and 2049, with and without residual, biases and dropout.
Exits 1 (with the reason) when the CUDA kernels cannot run here.
"""

from __future__ import annotations

import itertools
import sys

import torch

from semvlp import _ext
from semvlp.ops.backends.cuda import attention as cuda_attention, layer_norm as cuda_layer_norm


def _cu(lengths) -> torch.Tensor:
    return torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device="cuda")


def attention_cases() -> int:
    cases = 0
    shapes = [([1, 97, 0, 20], [1, 97, 5, 36]), ([130, 3], [64, 0])]
    for (lens_q, lens_k), head_dim, dtype, causal in itertools.product(
            shapes, (32, 64, 128), (torch.float16, torch.bfloat16), (False, True)):
        q = torch.randn(sum(lens_q), 2, head_dim, device="cuda", dtype=dtype, requires_grad=True)
        kv = torch.randn(sum(lens_k), 2, 2, head_dim, device="cuda", dtype=dtype, requires_grad=True)
        k, v = kv.unbind(1)  # strided views, as from a fused projection
        out = cuda_attention.varlen_attention(q, k, v, _cu(lens_q), _cu(lens_k), max(lens_q), max(lens_k),
                                              softmax_scale=head_dim ** -0.5, dropout_p=0.2, causal=causal)
        out.backward(torch.randn_like(out))
        cuda_attention.varlen_attention_with_keep_mask(q.detach(), k.detach(), v.detach(), _cu(lens_q), _cu(lens_k),
                                                       max(lens_q), max(lens_k), dropout_p=0.2, seed=7, offset=9,
                                                       softmax_scale=head_dim ** -0.5, causal=causal)
        cases += 1
    return cases


def layer_norm_cases() -> int:
    cases = 0
    for hidden, dtype, with_residual in itertools.product((1, 33, 768, 2049), (torch.float32, torch.bfloat16),
                                                          (False, True)):
        x = torch.randn(5, 3, hidden, device="cuda", dtype=dtype, requires_grad=True)
        weight = torch.randn(hidden, device="cuda", requires_grad=True)
        bias = torch.randn(hidden, device="cuda", requires_grad=True)
        if with_residual:
            residual = torch.randn_like(x, requires_grad=True)
            x_bias = torch.randn(hidden, device="cuda", dtype=dtype, requires_grad=True)
            out, total = cuda_layer_norm.add_layer_norm(x, residual, weight, bias, x_bias=x_bias, dropout_p=0.1,
                                                        prenorm=True)
            torch.autograd.backward((out, total), (torch.randn_like(out), torch.randn_like(total)))
            cuda_layer_norm.add_layer_norm_with_keep_mask(x.detach(), residual.detach(), weight, bias,
                                                          dropout_p=0.1, seed=3, offset=4)
        else:
            out = cuda_layer_norm.layer_norm(x, weight, bias)
            out.backward(torch.randn_like(out))
        cases += 1
    return cases


def main() -> int:
    reason = _ext.unavailable()
    if reason is not None:
        print(f"cuda_memcheck: the CUDA kernels cannot run here: {reason}")
        return 1
    torch.manual_seed(0)
    attention, layer_norm = attention_cases(), layer_norm_cases()
    torch.cuda.synchronize()
    print(f"cuda_memcheck: ran {attention} attention and {layer_norm} layer-norm cases (forward and backward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
