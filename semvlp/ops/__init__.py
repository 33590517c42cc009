"""The functional API: every op checks its inputs, asks `dispatch` for a backend and calls it.

The backends live in `semvlp.ops.backends` (one module or package each); `semvlp.backends()` says which of them
can run in the current process (and why not).
"""

from . import backends  # noqa: F401  (registers the backends)
from .activation import bias_gelu
from .attention import attention, varlen_attention
from .checks import normalize_attention_mask
from .dispatch import BackendNotSupportedError
from .layer_norm import add_layer_norm, layer_norm
from .rng import trace_seed_draws

__all__ = [
    "attention",
    "varlen_attention",
    "layer_norm",
    "add_layer_norm",
    "bias_gelu",
    "normalize_attention_mask",
    "BackendNotSupportedError",
    "trace_seed_draws",
]
