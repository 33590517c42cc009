"""The SemVLP model: config, backbone with the stream toggle, pretraining heads, Hugging Face BERT import."""

from .backbone import SemVLPModel
from .config import SemVLPConfig
from .hf_import import load_hf_bert
from .pretraining import PretrainingOutput, SemVLPForPretraining

__all__ = ["SemVLPConfig", "SemVLPModel", "SemVLPForPretraining", "PretrainingOutput", "load_hf_bert"]
