"""semvlp: SemVLP-style vision-language pretraining with fused kernels and packed sequences."""

from .model import PretrainingOutput, SemVLPConfig, SemVLPForPretraining, SemVLPModel, load_hf_bert
from .nn import PatchRecord, patch_hf_model
from .ops import backends

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
    "__version__",
]
