"""Dropout randomness shared by the kernel backends (Triton and CUDA), with a CPU reference.

Contract, so that every backend draws the same mask and the backward regenerates the forward's:

- A dropout call draws `(seed, offset)` (seed < 2**62, offset < 2**32) with `draw_seed_offset()` from
  torch's default CPU generator, so `torch.manual_seed` makes runs reproducible (and activation
  checkpointing, which restores the CPU RNG state, redraws the same pair).
- An element with 32-bit counters (c0, c1) gets the uniform number
  `uniform(philox(key=(seed_lo, seed_hi), counter=(c0, c1, offset, 0))[0])`: Philox-4x32 with
  10 rounds exactly as Triton's `tl.philox`, and `uniform` as Triton's `uint_to_uniform_float` (the word as
  int32, negatives mapped to ~x, times 4.6566127342e-10 in float32). It is kept iff uniform >= dropout_p.
- Attention probabilities (segment s, head h, query row i, key column j) use c0 = i * max_seqlen_k + j and
  c1 = s * nheads + h (for padded batches s is the batch index and max_seqlen_k is seqlen_k).
- Row-wise ops (add_layer_norm) use c0 = column, c1 = row of the flattened (rows, hidden) input.

`philox_uniform` and the two mask functions below are the reference the kernels are tested against.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK32 = np.uint64(0xFFFFFFFF)
_ROUND_A, _ROUND_B = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_KEY_A, _KEY_B = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_UNIFORM_SCALE = np.float32(4.6566127342e-10)


def draw_seed_offset() -> tuple[int, int]:
    """A fresh (seed, offset) pair from torch's default CPU generator (no device sync). Under torch.compile the
    draw is traced into the graph when `trace_seed_draws()` was called, and breaks the graph otherwise."""
    seed, offset = torch.randint(0, 2**62, (2,), dtype=torch.int64).tolist()
    return seed, offset % 2**32


def trace_seed_draws() -> None:
    """Let torch.compile trace every dropout call of the Philox backends (cuda, triton) into one graph: their
    (seed, offset) draw becomes a pair of symbolic ints inside the graph (dynamo's `capture_scalar_outputs`, a
    process-wide setting) instead of a graph break at each call. `semvlp pretrain --compile` calls it."""
    torch._dynamo.config.capture_scalar_outputs = True


def philox_uniform(seed: int, offset: int, c0, c1) -> torch.Tensor:
    """Uniform float32 numbers in [0, 1) for the counters (c0, c1) (arrays of equal shape, values < 2**32)."""
    c0 = np.asarray(c0, dtype=np.uint64) & _MASK32
    c1 = np.asarray(c1, dtype=np.uint64) & _MASK32
    if not 0 <= offset < 2**32:
        raise ValueError(f"offset: expected 0 <= offset < 2**32, got {offset}")
    c2 = np.full_like(c0, offset)
    c3 = np.zeros_like(c0)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    for _ in range(10):
        # Products of two 32-bit words fit in uint64 exactly: hi = >> 32, lo = & mask.
        prod_b = _ROUND_B * c2
        prod_a = _ROUND_A * c0
        c0, c1, c2, c3 = ((prod_b >> np.uint64(32)) ^ c1 ^ k0, prod_b & _MASK32,
                          (prod_a >> np.uint64(32)) ^ c3 ^ k1, prod_a & _MASK32)
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    word = c0.astype(np.uint32).view(np.int32)
    word = np.where(word < 0, ~word, word)
    return torch.from_numpy(word.astype(np.float32) * _UNIFORM_SCALE)


def attention_keep_mask(seed: int, offset: int, dropout_p: float, n_segments: int, nheads: int,
                        max_seqlen_q: int, max_seqlen_k: int) -> torch.Tensor:
    """Bool (n_segments, nheads, max_seqlen_q, max_seqlen_k), True = kept, per the contract above."""
    i = np.arange(max_seqlen_q, dtype=np.uint64)[:, None]
    j = np.arange(max_seqlen_k, dtype=np.uint64)[None, :]
    c0 = np.broadcast_to(i * np.uint64(max_seqlen_k) + j, (n_segments * nheads, max_seqlen_q, max_seqlen_k))
    c1 = np.broadcast_to(np.arange(n_segments * nheads, dtype=np.uint64)[:, None, None], c0.shape)
    u = philox_uniform(seed, offset, c0, c1)
    return (u >= dropout_p).view(n_segments, nheads, max_seqlen_q, max_seqlen_k)


def rowwise_keep_mask(seed: int, offset: int, dropout_p: float, rows: int, hidden: int) -> torch.Tensor:
    """Bool (rows, hidden), True = kept, per the contract above."""
    c0 = np.broadcast_to(np.arange(hidden, dtype=np.uint64)[None, :], (rows, hidden))
    c1 = np.broadcast_to(np.arange(rows, dtype=np.uint64)[:, None], (rows, hidden))
    return philox_uniform(seed, offset, c0, c1) >= dropout_p
