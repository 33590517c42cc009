"""Mask and padding helpers shared by the reference and the PyTorch-native backends."""

from __future__ import annotations

import torch


def causal_allowed(seqlen_q: int, seqlen_k: int, device, offset: torch.Tensor | int = 0) -> torch.Tensor:
    """Bottom-right aligned causal mask: query i sees key j iff j <= i + (seqlen_k - seqlen_q).

    `offset` replaces (seqlen_k - seqlen_q) and may be a (batch,) tensor for segments of unequal lengths;
    the result is (seqlen_q, seqlen_k) or (batch, 1, seqlen_q, seqlen_k).
    """
    i = torch.arange(seqlen_q, device=device)[:, None]
    j = torch.arange(seqlen_k, device=device)[None, :]
    if isinstance(offset, torch.Tensor):
        return (j <= i + offset.view(-1, 1, 1, 1)).view(-1, 1, seqlen_q, seqlen_k)
    return j <= i + offset


def pad_segments(x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int):
    """Packed (total, ...) -> padded (n_segments, max_seqlen, ...) and the bool (n_segments, max_seqlen) validity."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    valid = torch.arange(max_seqlen, device=x.device)[None, :] < lengths[:, None]
    padded = x.new_zeros((lengths.numel(), max_seqlen) + tuple(x.shape[1:]))
    padded[valid] = x
    return padded, valid


def padded_allowed(attention_mask, batch: int, seqlen_q: int, seqlen_k: int, causal: bool, device) -> torch.Tensor:
    """Bool (batch, 1, seqlen_q, seqlen_k): key padding (True = real key) and the causal rule combined."""
    allowed = torch.ones(batch, 1, seqlen_q, seqlen_k, dtype=torch.bool, device=device)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :]
    if causal:
        allowed = allowed & causal_allowed(seqlen_q, seqlen_k, device, seqlen_k - seqlen_q)
    return allowed


def pad_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int, causal: bool):
    """Packed q/k/v -> padded per segment, with the (n_segments, 1, max_q, max_k) `allowed` mask and the
    (n_segments, max_q) validity of the padded queries (to pack the output back with `out[q_valid]`)."""
    q_pad, q_valid = pad_segments(q, cu_seqlens_q, max_seqlen_q)
    k_pad, k_valid = pad_segments(k, cu_seqlens_k, max_seqlen_k)
    v_pad, _ = pad_segments(v, cu_seqlens_k, max_seqlen_k)
    allowed = k_valid[:, None, None, :]
    if causal:
        len_q = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).long()
        len_k = (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).long()
        allowed = allowed & causal_allowed(max_seqlen_q, max_seqlen_k, q.device, len_k - len_q)
    return q_pad, k_pad, v_pad, allowed, q_valid
