"""The shared encoder: one list of post-LN layers, with the cross-modal plug in `config.cross_layers`.

Every module, the cross-attention included, is built here once; `mode` only decides which segments attend
to which and whether the plugged cross-attention runs, so switching modes never touches a parameter.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..nn import FeedForward, PackedCrossAttention, PackedSelfAttention
from .config import MODES, SemVLPConfig
from .inputs import PackedLayout


def check_mode(mode) -> None:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")


class SharedLayer(nn.Module):
    """Self-attention, then (plugged layers only, two-stream only) cross-attention, then feed-forward."""

    def __init__(self, config: SemVLPConfig, plugged: bool):
        super().__init__()
        attention = dict(attention_dropout=config.attention_probs_dropout_prob,
                         hidden_dropout=config.hidden_dropout_prob, eps=config.layer_norm_eps,
                         backend=config.backend)
        self.self_attention = PackedSelfAttention(config.hidden_size, config.num_attention_heads, **attention)
        self.cross_attention = (PackedCrossAttention(config.hidden_size, config.num_attention_heads, **attention)
                                if plugged else None)
        self.feed_forward = FeedForward(config.hidden_size, config.intermediate_size,
                                        approximate=config.gelu_approximate, dropout=config.hidden_dropout_prob,
                                        eps=config.layer_norm_eps, backend=config.backend)

    def forward(self, hidden: torch.Tensor, layout: PackedLayout, mode: str) -> torch.Tensor:
        if mode == "single":
            hidden = self.self_attention(hidden, layout.joint_cu_seqlens, layout.max_joint_len)
        else:
            hidden = self.self_attention(hidden, layout.stream_cu_seqlens, layout.max_stream_len)
            if self.cross_attention is not None:
                hidden = self.cross_attention(hidden, layout.cross_kv_index, layout.stream_cu_seqlens,
                                              layout.cross_cu_seqlens_k, layout.max_stream_len,
                                              layout.max_stream_len)
        return self.feed_forward(hidden)


class SharedEncoder(nn.Module):
    def __init__(self, config: SemVLPConfig):
        super().__init__()
        plugged = set(config.cross_layers)
        self.layers = nn.ModuleList(SharedLayer(config, i in plugged) for i in range(config.num_hidden_layers))
        # Activation checkpointing: None, or a function(fn, *args) that runs fn(*args) and recomputes its
        # activations in backward (torch.utils.checkpoint.checkpoint, deepspeed.checkpointing.checkpoint).
        # Each layer is one checkpointed segment.
        self.checkpoint_fn: Callable | None = None

    def forward(self, hidden: torch.Tensor, layout: PackedLayout, mode: str = "single",
                output_layer: int | None = None):
        """hidden (total_tokens, hidden) in the layout's joint order -> same shape; with `output_layer` (0-based),
        (the last layer's output, that layer's output)."""
        check_mode(mode)
        if output_layer is not None and not 0 <= output_layer < len(self.layers):
            raise ValueError(f"output_layer: expected a layer index in [0, {len(self.layers)}), got {output_layer!r}")
        kept = None
        for index, layer in enumerate(self.layers):
            if self.checkpoint_fn is not None and self.training and torch.is_grad_enabled():
                hidden = self.checkpoint_fn(layer, hidden, layout, mode)
            else:
                hidden = layer(hidden, layout, mode)
            if index == output_layer:
                kept = hidden
        return hidden if output_layer is None else (hidden, kept)
