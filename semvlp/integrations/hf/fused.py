"""Fused forwards for the pieces of Hugging Face BERT-family layers, written as mixins.

`patch_hf_model` swaps the class of a Hugging Face module in place for a subclass that puts one of these
mixins first: parameters, buffers, hooks and state_dict keys stay exactly those of the original module, the
module still passes `isinstance` checks against its Hugging Face class (so Hugging Face's output capture
keeps working), and `super().forward` is the original computation, used for the calls the fused path does
not serve (attention weights requested, a key/value cache, a mask that is not plain key padding).

The mixins read only the attributes the Hugging Face modules already have, plus `_semvlp_backend`. Each call
first checks that the children it reads are plain and unhooked (`wrappers.wrapped_reason`): a LoRA or quantized
wrapper, a hook or an accelerate offloading hook added after patching makes that call run the original code.
"""

from __future__ import annotations

import importlib
import weakref

import torch
import torch.nn.functional as F

from ... import ops
from .transformer_layer import hf_gelu_form
from .wrappers import ATTENTION_CHILDREN, DENSE_ADD_NORM_CHILDREN, INTERMEDIATE_CHILDREN, wrapped_reason


class _KeyPaddingCache:
    """The key-padding mask derived from the last Hugging Face mask tensor seen.

    All layers of a forward pass receive the same mask tensor, so checking that it is plain key padding
    (every query row alike, only keep/drop values) costs one device-to-host copy per forward, not per layer.
    """

    def __init__(self):
        self._mask_ref = None
        self._version = -1
        self._result = None

    def lookup(self, mask: torch.Tensor):
        if self._mask_ref is not None and self._mask_ref() is mask and self._version == mask._version:
            return self._result
        return None

    def store(self, mask: torch.Tensor, result):
        self._mask_ref, self._version, self._result = weakref.ref(mask), mask._version, result
        return result


_CACHE = _KeyPaddingCache()
# Returned when a Hugging Face mask is not plain key padding; the caller runs the original forward.
NOT_KEY_PADDING = object()


def key_padding_mask(mask, batch: int, seqlen_k: int):
    """A Hugging Face attention mask as a bool (batch, seqlen_k) key-padding mask (True = real key).

    Accepts None, a 2D 0/1 mask (flash-attention style), and 4D (batch or 1, 1, 1 or seqlen_q, seqlen_k)
    masks, bool (True = attend) or additive float (0 = attend, the dtype's minimum = masked). Returns
    NOT_KEY_PADDING for anything else: a BlockMask, query rows that differ (a custom 4D mask), or additive
    values other than 0 and the minimum (a bias). While compiling or exporting, a 4D mask also gives
    NOT_KEY_PADDING: checking its values is a host sync that breaks the graph (pass 2D masks, as
    attn_implementation="semvlp" does, to keep the fused attention there).
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        return NOT_KEY_PADDING
    if mask.dim() == 2 and tuple(mask.shape) == (batch, seqlen_k):
        return mask.bool() if mask.dtype != torch.bool else mask
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, batch) or mask.shape[-1] != seqlen_k:
        return NOT_KEY_PADDING
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return NOT_KEY_PADDING
    cached = _CACHE.lookup(mask)
    if cached is not None:
        return cached
    first_row = mask[:, :, :1, :]
    if mask.dtype == torch.bool:
        keep, plain = first_row, (mask == first_row).all()
    else:
        keep = first_row == 0
        binary = (first_row == 0) | (first_row == torch.finfo(mask.dtype).min)
        plain = binary.all() & (mask == first_row).all()
    result = keep[:, 0, 0, :].expand(batch, seqlen_k) if bool(plain) else NOT_KEY_PADDING
    return _CACHE.store(mask, result)


def dropout_p(module) -> float:
    return module.dropout.p if module.training else 0.0


def fused_qkv(hidden: torch.Tensor, query, key, value, num_heads: int):
    """One matmul for the three projections: (..., hidden) -> q, k, v of shape (..., num_heads, head_dim)."""
    weight = torch.cat([query.weight, key.weight, value.weight])
    bias = torch.cat([query.bias, key.bias, value.bias])
    qkv = F.linear(hidden, weight, bias)
    return qkv.view(*hidden.shape[:-1], 3, num_heads, -1).unbind(dim=-3)


def fused_kv(context: torch.Tensor, key, value, num_heads: int):
    kv = F.linear(context, torch.cat([key.weight, value.weight]), torch.cat([key.bias, value.bias]))
    return kv.view(*context.shape[:-1], 2, num_heads, -1).unbind(dim=-3)


class FusedDenseAddNorm:
    """LayerNorm(input_tensor + dropout(dense(hidden_states))) through semvlp.ops.add_layer_norm.

    Serves BertSelfOutput, BertOutput and their VisualBERT and LXMERT twins (attributes dense, dropout,
    LayerNorm; forward(hidden_states, input_tensor)).
    """

    _semvlp_backend = "auto"

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        if wrapped_reason(self, DENSE_ADD_NORM_CHILDREN) is not None:
            return super().forward(hidden_states, input_tensor)
        projected = F.linear(hidden_states, self.dense.weight)
        bias = self.dense.bias
        if projected.dtype != input_tensor.dtype:
            # Under autocast the matmul runs in low precision while the residual stream stays float32;
            # Hugging Face adds them in float32, so do we.
            projected = projected.to(input_tensor.dtype)
        norm = self.LayerNorm
        return ops.add_layer_norm(projected, input_tensor, norm.weight, norm.bias, x_bias=bias,
                                  dropout_p=dropout_p(self), eps=norm.eps, backend=self._semvlp_backend)


class FusedIntermediate:
    """gelu(dense(hidden_states)) with the bias add fused into the activation (BertIntermediate and twins)."""

    _semvlp_backend = "auto"

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if wrapped_reason(self, INTERMEDIATE_CHILDREN) is not None:
            return super().forward(hidden_states)
        inner = F.linear(hidden_states, self.dense.weight)
        return ops.bias_gelu(inner, self.dense.bias.to(inner.dtype), hf_gelu_form(self.intermediate_act_fn),
                             backend=self._semvlp_backend)


def _attend(module, q, k, v, mask, softmax_scale=None) -> torch.Tensor:
    """semvlp.ops.attention on (batch, seqlen, heads, head_dim); returns (batch, seqlen_q, hidden)."""
    out = ops.attention(q, k, v, attention_mask=mask, dropout_p=dropout_p(module), softmax_scale=softmax_scale,
                        backend=module._semvlp_backend)
    return out.flatten(-2)


def _find_output_collector():
    for module in ("transformers.utils.output_capturing", "transformers.utils.generic"):
        try:
            return getattr(importlib.import_module(module), "_active_collector")
        except (ImportError, AttributeError):
            continue
    return None


# Looked up once: an import inside the forward would break torch.compile's graph.
_OUTPUT_COLLECTOR = _find_output_collector()


def output_collector():
    """Hugging Face's context variable of the outputs being captured (where BERT's output_attentions lives), or
    None when this transformers version keeps it elsewhere."""
    return _OUTPUT_COLLECTOR


def _attentions_requested(kwargs: dict) -> bool:
    """True when the call asks for attention weights: `output_attentions=True` passed down the forward, or a
    Hugging Face `capture_outputs` forward collecting them (when this transformers version exposes that)."""
    if kwargs.get("output_attentions"):
        return True
    collector = output_collector()
    collected = None if collector is None else collector.get()
    return collected is not None and "attentions" in collected


# Keyword names a key/value cache has had in BertSelfAttention.forward across transformers 5.x.
_CACHE_KEYWORDS = ("cache", "past_key_values", "past_key_value")


class FusedBertSelfAttention:
    """BertSelfAttention.forward(hidden_states, attention_mask, <cache>, **kwargs) -> (context, None)."""

    _semvlp_backend = "auto"

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        batch, seqlen = hidden_states.shape[:2]
        mask = key_padding_mask(attention_mask, batch, seqlen)
        cached = args or any(kwargs.get(name) is not None for name in _CACHE_KEYWORDS)
        # A causal (decoder) self-attention is only built with the class-level patch; patch_hf_model skips it.
        if (cached or getattr(self, "is_causal", False) or mask is NOT_KEY_PADDING or _attentions_requested(kwargs)
                or wrapped_reason(self, ATTENTION_CHILDREN) is not None):
            return super().forward(hidden_states, attention_mask, *args, **kwargs)
        q, k, v = fused_qkv(hidden_states, self.query, self.key, self.value, self.num_attention_heads)
        return _attend(self, q, k, v, mask, softmax_scale=getattr(self, "scaling", None)), None


class FusedVisualBertSelfAttention:
    """VisualBertSelfAttention.forward(hidden_states, attention_mask, output_attentions) -> (context,)."""

    _semvlp_backend = "auto"

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        batch, seqlen = hidden_states.shape[:2]
        mask = key_padding_mask(attention_mask, batch, seqlen)
        if output_attentions or mask is NOT_KEY_PADDING or wrapped_reason(self, ATTENTION_CHILDREN) is not None:
            return super().forward(hidden_states, attention_mask, output_attentions)
        q, k, v = fused_qkv(hidden_states, self.query, self.key, self.value, self.num_attention_heads)
        return (_attend(self, q, k, v, mask),)


class FusedLxmertAttention:
    """LxmertAttention.forward(hidden_states, context, attention_mask, output_attentions) -> (context,).

    Self-attention (context is hidden_states) takes one fused QKV matmul; cross-attention one for the query
    and one fused key/value matmul over the context.
    """

    _semvlp_backend = "auto"

    def forward(self, hidden_states, context, attention_mask=None, output_attentions=False):
        batch = hidden_states.shape[0]
        mask = key_padding_mask(attention_mask, batch, context.shape[1])
        if output_attentions or mask is NOT_KEY_PADDING or wrapped_reason(self, ATTENTION_CHILDREN) is not None:
            return super().forward(hidden_states, context, attention_mask, output_attentions)
        heads = self.num_attention_heads
        if context is hidden_states:
            q, k, v = fused_qkv(hidden_states, self.query, self.key, self.value, heads)
        else:
            q = self.query(hidden_states).view(*hidden_states.shape[:-1], heads, -1)
            k, v = fused_kv(context, self.key, self.value, heads)
        return (_attend(self, q, k, v, mask),)
