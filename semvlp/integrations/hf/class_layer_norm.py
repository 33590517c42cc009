"""The LayerNorm class `apply_to_*` puts in a transformers modeling module in place of `nn.LayerNorm`."""

from __future__ import annotations

from ...nn.layer_norm import LayerNorm


class ClassLevelLayerNorm(LayerNorm):
    """semvlp.nn.LayerNorm built with the backend of the last `apply_to_*` call (constructed by transformers as
    `nn.LayerNorm(hidden_size, eps=...)`)."""

    backend_for_new = "auto"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("backend", type(self).backend_for_new)
        super().__init__(*args, **kwargs)
