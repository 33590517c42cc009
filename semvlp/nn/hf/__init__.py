"""Patching of Hugging Face BERT-family models with semvlp's fused pieces (transformers is imported lazily)."""

from .patch import Patched, PatchRecord, Skipped, patch_hf_model

__all__ = ["patch_hf_model", "PatchRecord", "Patched", "Skipped"]
