"""Hugging Face integration: `patch_hf_model` swaps the pieces of a BERT, VisualBERT or LXMERT model for semvlp's
fused ones, `apply_to_bert` / `apply_to_visual_bert` / `apply_to_lxmert` do it for the classes before a model is
built, `attn_implementation="semvlp"` selects semvlp's attention (registered on import), and `TransformerLayer`
is a fused BERT layer loadable from theirs. `AutoConfig` / `AutoModel.from_pretrained` read folders of semvlp
models (model_type "semvlp", registered on import by `register_auto_classes`)."""

from .apply import (ClassPatch, apply_to_bert, apply_to_lxmert, apply_to_visual_bert, revert_bert, revert_lxmert,
                    revert_visual_bert)
from .attention_interface import register_attention
from .auto import register_auto_classes
from .patch import Patched, PatchRecord, Skipped, patch_hf_model
from .transformer_layer import TransformerLayer

register_auto_classes()
register_attention()

__all__ = ["patch_hf_model", "PatchRecord", "Patched", "Skipped", "TransformerLayer", "apply_to_bert",
           "apply_to_visual_bert", "apply_to_lxmert", "revert_bert", "revert_visual_bert", "revert_lxmert",
           "ClassPatch", "register_attention", "register_auto_classes"]
