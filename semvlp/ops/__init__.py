"""The functional API: every op checks its inputs, asks `dispatch` for a backend and calls it."""

from . import _backends  # noqa: F401  (registers the backends)
from .activation import bias_gelu
from .attention import attention, varlen_attention
from .dispatch import BackendNotSupportedError, backends
from .layer_norm import add_layer_norm, layer_norm

__all__ = [
    "attention",
    "varlen_attention",
    "layer_norm",
    "add_layer_norm",
    "bias_gelu",
    "backends",
    "BackendNotSupportedError",
]
