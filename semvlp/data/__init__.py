"""Data: packed layouts, batches, and their generators and readers."""

from ..model.inputs import PackedLayout, PretrainingBatch
from .random_batch import random_batch

__all__ = ["PackedLayout", "PretrainingBatch", "random_batch"]
