"""Class-level drop-in: `apply_to_bert()`, `apply_to_visual_bert()`, `apply_to_lxmert()`.

Called before a model is built (`from_pretrained` or the constructor), they swap the classes in transformers'
modeling module for semvlp's fused ones, so every model built afterwards holds fused pieces; models built
before keep theirs (use `patch_hf_model` on those). The fused classes decide per call: a piece whose children
are wrapped or hooked (PEFT, quantization, accelerate offloading, forward hooks), a causal (decoder) attention,
or a call asking for attention weights or passing a cache runs the original transformers code.
"""

from __future__ import annotations

import importlib
import types
from dataclasses import dataclass, field

from torch import nn

from .attention_interface import register_attention
from .class_layer_norm import ClassLevelLayerNorm

_MODULES = {"bert": "transformers.models.bert.modeling_bert",
            "visual_bert": "transformers.models.visual_bert.modeling_visual_bert",
            "lxmert": "transformers.models.lxmert.modeling_lxmert"}


class _TorchNnWithLayerNorm(types.ModuleType):
    """Stands in for `torch.nn` inside one modeling module: `nn.LayerNorm` is semvlp's, the rest torch's."""

    LayerNorm = ClassLevelLayerNorm

    def __init__(self):
        super().__init__("torch.nn")

    def __getattr__(self, name):
        return getattr(nn, name)


@dataclass
class ClassPatch:
    """What an `apply_to_*` call replaced in a modeling module; `revert()` puts the originals back."""

    family: str
    replaced: dict[str, type] = field(default_factory=dict)   # attribute name -> original
    reverted: bool = False

    def revert(self) -> None:
        if self.reverted:
            return
        module = importlib.import_module(_MODULES[self.family])
        for name, original in self.replaced.items():
            if "_semvlp_backend" in vars(getattr(module, name)):
                delattr(getattr(module, name), "_semvlp_backend")
            setattr(module, name, original)
        if "nn" in self.replaced:
            ClassLevelLayerNorm.backend_for_new = "auto"
        _ACTIVE.pop(self.family, None)
        self.reverted = True


_ACTIVE: dict[str, ClassPatch] = {}


def _pieces(family: str, attention: bool, feed_forward: bool) -> dict[str, type]:
    """Attribute name in the modeling module -> fused class, for the pieces asked for."""
    from .classes import ATTENTION, ATTENTION_OUTPUT, FEED_FORWARD, FUSED

    module = importlib.import_module(_MODULES[family])
    wanted = {ATTENTION: attention, ATTENTION_OUTPUT: attention, FEED_FORWARD: feed_forward}
    return {original.__name__: fused for original, (fused, piece) in FUSED.items()
            if original.__module__ == module.__name__ and wanted[piece]}


def _apply(family: str, attention: bool, feed_forward: bool, layer_norm: bool, backend: str) -> ClassPatch:
    for name, value in (("attention", attention), ("feed_forward", feed_forward), ("layer_norm", layer_norm)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected a bool, got {value!r}")
    if not isinstance(backend, str):
        raise ValueError(f"backend: expected a string, got {type(backend).__name__}")
    revert(family)  # idempotent: a second call replaces the first, never stacks on it
    register_attention()
    module = importlib.import_module(_MODULES[family])
    patch = ClassPatch(family)
    for name, fused in _pieces(family, attention, feed_forward).items():
        patch.replaced[name] = getattr(module, name)
        setattr(module, name, fused)
        fused._semvlp_backend = backend
    if layer_norm:
        patch.replaced["nn"] = module.nn
        module.nn = _TorchNnWithLayerNorm()
        ClassLevelLayerNorm.backend_for_new = backend
    _ACTIVE[family] = patch
    return patch


def revert(family: str) -> None:
    """Undo the active class-level patch of `family` ("bert", "visual_bert" or "lxmert"), if any."""
    if family not in _MODULES:
        raise ValueError(f"family: expected one of {sorted(_MODULES)}, got {family!r}")
    patch = _ACTIVE.get(family)
    if patch is not None:
        patch.revert()


def apply_to_bert(*, attention: bool = True, feed_forward: bool = True, layer_norm: bool = True,
                  backend: str = "auto") -> ClassPatch:
    """Make BERT models built from now on use semvlp's fused pieces (call before `from_pretrained`).

    Args:
        attention: fused QKV projection + `semvlp.ops.attention`, and the fused attention-output block.
        feed_forward: `semvlp.ops.bias_gelu` and the fused feed-forward output block (add + LayerNorm).
        layer_norm: every other `nn.LayerNorm` the model builds (embeddings, heads) is `semvlp.nn.LayerNorm`.
        backend: semvlp.ops backend ("auto" or a name from `semvlp.backends()`).

    Returns:
        A ClassPatch; `.revert()` (or `revert_bert()`) restores transformers' classes for models built later.
        Calling again replaces the previous call's patch.
    """
    return _apply("bert", attention, feed_forward, layer_norm, backend)


def apply_to_visual_bert(*, attention: bool = True, feed_forward: bool = True, layer_norm: bool = True,
                         backend: str = "auto") -> ClassPatch:
    """`apply_to_bert` for VisualBERT models."""
    return _apply("visual_bert", attention, feed_forward, layer_norm, backend)


def apply_to_lxmert(*, attention: bool = True, feed_forward: bool = True, layer_norm: bool = True,
                    backend: str = "auto") -> ClassPatch:
    """`apply_to_bert` for LXMERT models (self- and cross-attention)."""
    return _apply("lxmert", attention, feed_forward, layer_norm, backend)


def revert_bert() -> None:
    revert("bert")


def revert_visual_bert() -> None:
    revert("visual_bert")


def revert_lxmert() -> None:
    revert("lxmert")
