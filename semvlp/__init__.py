"""semvlp: SemVLP-style vision-language pretraining with fused kernels and packed sequences."""

from . import _moved
from .model import PretrainingOutput, SemVLPConfig, SemVLPForPretraining, SemVLPModel, load_hf_bert
from .integrations.hf import PatchRecord, TransformerLayer, patch_hf_model
from .ops.dispatch import backends

_moved.install()

__version__ = "0.1.0"

__all__ = [
    "SemVLPConfig",
    "SemVLPModel",
    "SemVLPForPretraining",
    "PretrainingOutput",
    "load_hf_bert",
    "backends",
    "patch_hf_model",
    "PatchRecord",
    "TransformerLayer",
    "__version__",
]
