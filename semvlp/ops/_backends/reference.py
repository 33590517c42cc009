"""The `reference` backend: pure PyTorch with fp32 compute; runs everything, everywhere."""

from __future__ import annotations

from .. import reference
from ..dispatch import Backend, register_backend


def _always(**_inputs) -> list[str]:
    return []


register_backend(Backend(
    name="reference",
    priority=0,
    unavailable=lambda: None,
    ops={
        "attention": (_always, reference.attention),
        "varlen_attention": (_always, reference.varlen_attention),
        "layer_norm": (_always, reference.layer_norm),
        "add_layer_norm": (_always, reference.add_layer_norm),
        "bias_gelu": (_always, reference.bias_gelu),
    },
))
