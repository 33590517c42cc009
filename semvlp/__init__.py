"""semvlp: SemVLP-style vision-language pretraining with fused kernels and packed sequences.

The Hugging Face integration's names (`patch_hf_model`, `apply_to_bert`, ...) load on first use: importing
`semvlp.integrations.hf` imports transformers and registers `attn_implementation="semvlp"` and the Auto classes,
which the model, the ops and the training commands do not need.
"""

import importlib

from . import _moved
from .model import PretrainingOutput, SemVLPConfig, SemVLPForPretraining, SemVLPModel, load_hf_bert
from .ops.dispatch import backends

_moved.install()

__version__ = "0.1.0"

_HF_NAMES = ("patch_hf_model", "PatchRecord", "TransformerLayer", "apply_to_bert", "apply_to_visual_bert",
             "apply_to_lxmert", "revert_bert", "revert_visual_bert", "revert_lxmert")

__all__ = [
    "SemVLPConfig",
    "SemVLPModel",
    "SemVLPForPretraining",
    "PretrainingOutput",
    "load_hf_bert",
    "backends",
    *_HF_NAMES,
    "__version__",
]


def __getattr__(name: str):
    if name in _HF_NAMES:
        return getattr(importlib.import_module(".integrations.hf", __name__), name)
    raise AttributeError(f"module 'semvlp' has no attribute {name!r}")
