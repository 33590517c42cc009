"""The SemVLP model: config, backbone with the stream toggle, pretraining heads, Hugging Face BERT import."""

from .backbone import SemVLPModel
from .config import SemVLPConfig
from .finetuning import (SemVLPForImageTextMatching, SemVLPForPairedReasoning, SemVLPForQuestionAnswering,
                         load_backbone, soft_target_loss)
from .hf_bert import load_hf_bert
from .pretraining import PretrainingOutput, SemVLPForPretraining

__all__ = [
    "SemVLPConfig",
    "SemVLPModel",
    "SemVLPForPretraining",
    "PretrainingOutput",
    "SemVLPForQuestionAnswering",
    "SemVLPForImageTextMatching",
    "SemVLPForPairedReasoning",
    "soft_target_loss",
    "load_backbone",
    "load_hf_bert",
]
