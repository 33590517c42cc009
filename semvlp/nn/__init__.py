"""Modules that own parameters and call semvlp.ops: drop-in LayerNorm and the fused post-LN sub-blocks."""

from .attention import PackedCrossAttention, PackedSelfAttention
from .feed_forward import FeedForward
from .layer_norm import LayerNorm

__all__ = ["LayerNorm", "PackedSelfAttention", "PackedCrossAttention", "FeedForward"]
