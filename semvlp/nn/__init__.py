"""Modules that own parameters and call semvlp.ops: drop-in LayerNorm, the fused post-LN sub-blocks, a fused
BERT layer, and the patching of Hugging Face BERT-family models with them."""

from .attention import PackedCrossAttention, PackedSelfAttention
from .feed_forward import FeedForward
from .hf import PatchRecord, patch_hf_model
from .layer_norm import LayerNorm
from .transformer_layer import TransformerLayer

__all__ = ["LayerNorm", "PackedSelfAttention", "PackedCrossAttention", "FeedForward", "TransformerLayer",
           "patch_hf_model", "PatchRecord"]
