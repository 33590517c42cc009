"""Data: packed layouts, batches, and their generators and readers."""

from .batch import PretrainingBatch
from .packing import PackedLayout
from .random_batch import random_batch

__all__ = ["PackedLayout", "PretrainingBatch", "random_batch"]
