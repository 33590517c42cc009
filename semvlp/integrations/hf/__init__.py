"""Hugging Face integration: `patch_hf_model` swaps the pieces of BERT, VisualBERT and LXMERT models for
semvlp's fused ones, and `TransformerLayer` is a fused BERT layer loadable from theirs (transformers is
imported lazily)."""

from .patch import Patched, PatchRecord, Skipped, patch_hf_model
from .transformer_layer import TransformerLayer

__all__ = ["patch_hf_model", "PatchRecord", "Patched", "Skipped", "TransformerLayer"]
