"""Modules that own parameters and call `semvlp.ops`: the drop-in LayerNorm and the fused post-LN sub-blocks
(packed self- and cross-attention, feed-forward) the model is built from."""

import importlib
import warnings

from .attention import PackedCrossAttention, PackedSelfAttention
from .feed_forward import FeedForward
from .layer_norm import LayerNorm

__all__ = ["LayerNorm", "PackedSelfAttention", "PackedCrossAttention", "FeedForward"]

# Names that moved to the Hugging Face integration; the old import path keeps working, with a warning.
MOVED = {"TransformerLayer": "semvlp.integrations.hf", "patch_hf_model": "semvlp.integrations.hf",
         "PatchRecord": "semvlp.integrations.hf"}


def __getattr__(name: str):
    if name in MOVED:
        warnings.warn(f"semvlp.nn.{name} moved to {MOVED[name]}.{name}; import it from there",
                      FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(MOVED[name]), name)
    raise AttributeError(f"module 'semvlp.nn' has no attribute {name!r}")
