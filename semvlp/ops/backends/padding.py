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


def segment_validity(cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
    """Bool (n_segments, max_seqlen): position j of segment i holds a token."""
    return torch.arange(max_seqlen, device=cu_seqlens.device)[None, :] < cu_seqlens.diff()[:, None]


def segment_coordinates(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment, position within it) of each of the `total` packed tokens, int64 (total,) each.

    Static shapes only (no `nonzero`), so a compiled graph neither breaks nor depends on the batch's lengths."""
    offsets = cu_seqlens.long()  # once: each conversion is an op, and small calls are counted in ops
    token = torch.arange(total, device=cu_seqlens.device)
    segment = torch.searchsorted(offsets[1:], token, right=True)
    return segment, token - offsets.index_select(0, segment)


def pad_segments(x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                 index: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Packed (total, ...) -> padded (n_segments, max_seqlen, ...) and the `segment_coordinates` of its tokens
    (`index`, when given, is those coordinates computed already); `padded[index]` packs it back."""
    if index is None:
        index = segment_coordinates(cu_seqlens, x.shape[0])
    padded = x.new_zeros((cu_seqlens.numel() - 1, max_seqlen) + x.shape[1:])
    return padded.index_put(index, x), index


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
    (segment, position) coordinates of the packed queries (to pack the output back with `out[q_index]`)."""
    q_pad, q_index = pad_segments(q, cu_seqlens_q, max_seqlen_q)
    # Self-attention passes one offsets tensor for both sides: its coordinates are computed once.
    same = cu_seqlens_k is cu_seqlens_q and k.shape[0] == q.shape[0]
    k_pad, k_index = pad_segments(k, cu_seqlens_k, max_seqlen_k, q_index if same else None)
    v_pad, _ = pad_segments(v, cu_seqlens_k, max_seqlen_k, k_index)
    allowed = segment_validity(cu_seqlens_k, max_seqlen_k)[:, None, None, :]
    if causal:
        len_q = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).long()
        len_k = (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).long()
        allowed = allowed & causal_allowed(max_seqlen_q, max_seqlen_k, q.device, len_k - len_q)
    return q_pad, k_pad, v_pad, allowed, q_index
