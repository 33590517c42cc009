"""patch_hf_model: swap the self-attention, feed-forward and LayerNorm pieces of a Hugging Face BERT, VisualBERT
or LXMERT model for semvlp's fused ones, in place, with a record that says what changed and can undo it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn

from ...nn.layer_norm import LayerNorm
from .transformer_layer import hf_gelu_form
from .wrappers import hooked_reason, wrapped_reason

logger = logging.getLogger(__name__)

# Attention implementations whose masks the fused attention reads (others, e.g. flex_attention's BlockMask,
# stay with Hugging Face).
MASK_FORMATS_READ = (None, "eager", "sdpa", "flash_attention_2", "flash_attention_3", "semvlp")


@dataclass(frozen=True)
class Patched:
    path: str      # module path in the model ("" = the model itself)
    before: str    # class name before
    after: str     # class name after


@dataclass(frozen=True)
class Skipped:
    path: str
    module: str    # class name, left as it was
    reason: str


@dataclass
class PatchRecord:
    """What `patch_hf_model` replaced and what it left alone (with the reason); `undo()` restores the model."""

    patched: list[Patched] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    _undo_steps: list = field(default_factory=list, repr=False)
    undone: bool = False

    def undo(self) -> None:
        """Put every original module and class back (the parameters, shared throughout, keep their values)."""
        if self.undone:
            raise RuntimeError("undo: this patch was undone already")
        for step in reversed(self._undo_steps):
            step()
        self.undone = True

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for p in self.patched:
            key = f"{p.before} -> {p.after}"
            counts[key] = counts.get(key, 0) + 1
        lines = [f"patched {len(self.patched)} modules:"] + [f"  {n} x {k}" for k, n in sorted(counts.items())]
        if self.skipped:
            lines.append(f"left {len(self.skipped)} modules unpatched:")
            lines += [f"  {s.path or '<model>'} ({s.module}): {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def _configs(model: nn.Module) -> dict[str, object]:
    """Path -> config of every Hugging Face (sub-)model in `model`."""
    from transformers import PreTrainedModel

    return {path: module.config for path, module in model.named_modules() if isinstance(module, PreTrainedModel)}


def _config_for(path: str, configs: dict[str, object]):
    """The config of the innermost Hugging Face model that holds the module at `path` (None if none does)."""
    holders = [prefix for prefix in configs if prefix == "" or path == prefix or path.startswith(prefix + ".")]
    return configs[max(holders, key=len)] if holders else None


def _attention_reasons(module: nn.Module, config) -> list[str]:
    reasons = []
    if config is not None:
        if getattr(config, "output_attentions", False):
            reasons.append("config.output_attentions=True asks for attention weights, which the fused attention "
                           "does not compute")
        if getattr(config, "is_decoder", False):
            reasons.append("a decoder (causal self-attention with a key/value cache)")
        if getattr(config, "add_cross_attention", False):
            reasons.append("a decoder with cross-attention")
        position = getattr(config, "position_embedding_type", "absolute")
        if position != "absolute":
            reasons.append(f"position_embedding_type={position!r}: relative position embeddings are not supported")
        implementation = getattr(config, "_attn_implementation", None)
        if implementation not in MASK_FORMATS_READ:
            reasons.append(f"attention implementation {implementation!r}: its masks are not read by the fused "
                           f"attention (supported: {[m for m in MASK_FORMATS_READ if m]})")
    if any(getattr(module, name).bias is None for name in ("query", "key", "value")):
        reasons.append("query/key/value without bias")
    return reasons


def _feed_forward_reasons(module: nn.Module) -> list[str]:
    act = getattr(module, "intermediate_act_fn", None)
    if act is None:
        return []
    reasons = []
    if hf_gelu_form(act) is None:
        reasons.append(f"activation {type(act).__name__} is not a GELU form that bias_gelu computes")
    if module.dense.bias is None:
        reasons.append("dense layer without bias")
    return reasons


def _swap_class(module: nn.Module, fused_class: type, backend: str, record: PatchRecord, path: str) -> None:
    original = type(module)
    module.__class__ = fused_class
    module._semvlp_backend = backend

    def restore():
        module.__class__ = original
        del module._semvlp_backend

    record._undo_steps.append(restore)
    record.patched.append(Patched(path, original.__name__, fused_class.__name__))


def _our_layer_norm(norm: nn.LayerNorm, backend: str) -> LayerNorm:
    """semvlp.nn.LayerNorm holding the very same Parameter objects as `norm` (no copy)."""
    ours = LayerNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=norm.elementwise_affine,
                     bias=norm.bias is not None, device="meta", backend=backend)
    ours.weight, ours.bias = norm.weight, norm.bias
    ours.train(norm.training)
    return ours


def _swap_layer_norms(model: nn.Module, backend: str, record: PatchRecord) -> None:
    replacements: dict[int, LayerNorm] = {}
    for parent_path, parent in list(model.named_modules(remove_duplicate=False)):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.LayerNorm:
                continue
            path = f"{parent_path}.{name}" if parent_path else name
            # A new module would drop the hooks on this one, and an accelerate hook moves its weights in.
            reason = hooked_reason(child, "the LayerNorm")
            if reason is not None:
                if id(child) not in replacements:
                    record.skipped.append(Skipped(path, "LayerNorm", reason))
                continue
            ours = replacements.setdefault(id(child), _our_layer_norm(child, backend))
            setattr(parent, name, ours)
            record._undo_steps.append(lambda parent=parent, name=name, child=child: setattr(parent, name, child))
            record.patched.append(Patched(path, "LayerNorm", f"semvlp.nn.{type(ours).__name__}"))


def patch_hf_model(model: nn.Module, *, attention: bool = True, feed_forward: bool = True,
                   layer_norm: bool = True, backend: str = "auto") -> PatchRecord:
    """Swap, in place, the pieces of a Hugging Face BERT / VisualBERT / LXMERT model for semvlp's fused ones.

    - self-attention (BertSelfAttention, VisualBertSelfAttention, LxmertAttention, the last also as LXMERT's
      cross-attention): one fused QKV (or KV) matmul and `semvlp.ops.attention` with a key-padding mask;
      their output blocks (dense + dropout + residual + LayerNorm): `semvlp.ops.add_layer_norm`.
    - feed-forward (BertIntermediate / BertOutput and twins): `semvlp.ops.bias_gelu`, `add_layer_norm`.
    - every remaining `torch.nn.LayerNorm` (embeddings, heads): `semvlp.nn.LayerNorm`.

    Parameters are not copied: the patched model holds the same Parameter objects under the same names, so
    its state_dict, an optimizer built before or after, and `undo()` all see one set of weights. Pieces
    whose configuration the fused path does not serve are left as they are and listed in the record's
    `skipped` with the reason: attention of decoders (causal, cache, cross-attention), relative position
    embeddings, output_attentions set in the config, attention implementations whose masks it does not
    read, activations other than GELU. A forward call that asks for attention weights, passes a cache or a
    mask that is not plain key padding runs the original Hugging Face code for that call.

    Wrappers are honoured, never computed around: a module whose children the fused piece would read directly
    but which are not plain torch layers (PEFT/LoRA wrappers, dynamically quantized linears, subclasses), carry
    forward/backward hooks or accelerate's `_hf_hook` (offloading), or hold parameters on the meta device is
    left unpatched, with the reason in `skipped`; so is a LayerNorm with hooks. Wrappers or hooks added after
    patching make the affected piece run the original code on each call (the check is made per call).

    Args:
        model: any torch module holding Hugging Face BERT, VisualBERT or LXMERT layers.
        attention, feed_forward, layer_norm: which pieces to patch.
        backend: semvlp.ops backend for the fused pieces ("auto" or a name from `semvlp.backends()`).

    Returns:
        A PatchRecord (`patched`, `skipped`, `summary()`, `undo()`).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(backend, str):
        raise ValueError(f"backend: expected a string, got {type(backend).__name__}")
    from .classes import ATTENTION, ATTENTION_OUTPUT, FEED_FORWARD, FUSED, children_read

    wanted = {ATTENTION: attention, ATTENTION_OUTPUT: attention, FEED_FORWARD: feed_forward}
    fused_classes = {fused for fused, _ in FUSED.values()}
    configs = _configs(model)
    record = PatchRecord()
    for path, module in list(model.named_modules()):
        kind = type(module)
        if kind in fused_classes:
            record.skipped.append(Skipped(path, kind.__name__, "already patched"))
            continue
        if kind not in FUSED:
            parent = next((c for c in FUSED if isinstance(module, c)), None)
            if parent is not None:
                record.skipped.append(Skipped(path, kind.__name__, f"a subclass of {parent.__name__}, whose forward "
                                              "may differ from the one the fused piece replaces"))
            continue
        fused_class, piece = FUSED[kind]
        if not wanted[piece]:
            continue
        if piece == ATTENTION:
            reasons = _attention_reasons(module, _config_for(path, configs))
        elif piece == FEED_FORWARD:
            reasons = _feed_forward_reasons(module)
        else:
            reasons = []
        wrapped = wrapped_reason(module, children_read(fused_class))
        if wrapped is not None:
            reasons.append(wrapped)
        if reasons:
            record.skipped.append(Skipped(path, kind.__name__, "; ".join(reasons)))
            continue
        _swap_class(module, fused_class, backend, record, path)
    if layer_norm:
        _swap_layer_norms(model, backend, record)
    if not record.patched and not record.skipped:
        record.skipped.append(Skipped("", type(model).__name__, "no Hugging Face BERT, VisualBERT or LXMERT "
                                      "pieces found"))
    for skip in record.skipped:
        logger.warning("patch_hf_model: left %s (%s) unpatched: %s", skip.path or "<model>", skip.module, skip.reason)
    logger.info("patch_hf_model: %d modules patched", len(record.patched))
    return record

