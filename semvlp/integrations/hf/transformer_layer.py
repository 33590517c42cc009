"""TransformerLayer: a fused post-LN BERT layer on padded batches or packed tokens, loadable from Hugging Face."""

from __future__ import annotations

import torch
from torch import nn

from ...nn import FeedForward, PackedSelfAttention
from ...ops import normalize_attention_mask

# Hugging Face activation module class names -> the `approximate` form of semvlp.ops.bias_gelu (their
# pure-Python variants compute the same functions).
HF_GELU_CLASSES = {"GELUActivation": "none", "NewGELUActivation": "tanh", "GELUTanh": "tanh"}


def hf_gelu_form(activation) -> str | None:
    """`approximate` for a Hugging Face activation module, or None when bias_gelu does not compute it."""
    return HF_GELU_CLASSES.get(type(activation).__name__)


class TransformerLayer(nn.Module):
    """Post-LN BERT layer: fused-QKV self-attention, then the feed-forward block, each ending in the fused
    bias-dropout-residual-LayerNorm (see PackedSelfAttention and FeedForward).

    Padded input (batch, seqlen, hidden) with a key-padding mask is unpadded first, so no work is spent on
    padding, and the padding rows of the output are zero. Packed input (total_tokens, hidden) takes the
    segment offsets directly.
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, *, attention_dropout: float = 0.0,
                 hidden_dropout: float = 0.0, eps: float = 1e-12, approximate: str = "none", backend: str = "auto"):
        super().__init__()
        self.self_attention = PackedSelfAttention(hidden_size, num_heads, attention_dropout=attention_dropout,
                                                  hidden_dropout=hidden_dropout, eps=eps, backend=backend)
        self.feed_forward = FeedForward(hidden_size, intermediate_size, approximate=approximate,
                                        dropout=hidden_dropout, eps=eps, backend=backend)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None) -> torch.Tensor:
        """Run the layer.

        Args:
            hidden: (batch, seqlen, hidden) padded, or (total_tokens, hidden) packed.
            attention_mask: padded input only; optional (batch, seqlen) bool or 0/1, True/1 = real token.
                Deriving the segments from it costs one device-to-host copy; a stack of layers is faster
                on packed tokens.
            cu_seqlens, max_seqlen: packed input only; int32 (n_segments + 1,) offsets and the longest
                segment, as in `semvlp.ops.varlen_attention` (tokens attend within their segment).

        Returns:
            The shape of `hidden`.
        """
        if hidden.dim() == 2:
            if cu_seqlens is None or max_seqlen is None:
                raise ValueError("cu_seqlens/max_seqlen: required for packed (total_tokens, hidden) input, got None")
            if attention_mask is not None:
                raise ValueError("attention_mask: only for padded (batch, seqlen, hidden) input; packed input "
                                 "takes cu_seqlens")
            return self._packed(hidden, cu_seqlens, max_seqlen)
        if hidden.dim() != 3:
            raise ValueError(f"hidden: expected (batch, seqlen, hidden) or (total_tokens, hidden), "
                             f"got shape {tuple(hidden.shape)}")
        if cu_seqlens is not None or max_seqlen is not None:
            raise ValueError("cu_seqlens/max_seqlen: only for packed input; padded input takes attention_mask")
        batch, seqlen, width = hidden.shape
        real = normalize_attention_mask(attention_mask, batch, seqlen, hidden.device)
        if real is None:
            cu = torch.arange(0, (batch + 1) * seqlen, seqlen, dtype=torch.int32, device=hidden.device)
            return self._packed(hidden.reshape(batch * seqlen, width), cu, seqlen).view_as(hidden)
        lengths = real.sum(dim=1, dtype=torch.int32)
        cu = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        packed = self._packed(hidden[real], cu, int(lengths.max()))
        return hidden.new_zeros(hidden.shape).index_put((real,), packed)

    def _packed(self, hidden: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        return self.feed_forward(self.self_attention(hidden, cu_seqlens, max_seqlen))

    @classmethod
    def from_hf(cls, layer: nn.Module, *, backend: str = "auto") -> "TransformerLayer":
        """A TransformerLayer with the weights of a Hugging Face BERT-style layer (copied, not shared).

        Takes `BertLayer` and layers with its structure (`VisualBertLayer`, `LxmertLayer`): attention.self
        {query, key, value}, attention.output {dense, LayerNorm}, intermediate {dense, activation}, output
        {dense, LayerNorm}. Sizes, epsilon, dropout and the GELU form are read from the layer.
        """
        try:
            attn, attn_out = layer.attention.self, layer.attention.output
            inter, out = layer.intermediate, layer.output
            query, key, value = attn.query, attn.key, attn.value
            num_heads = attn.num_attention_heads
        except AttributeError as err:
            raise ValueError(f"layer: expected a Hugging Face BERT-style layer, got {type(layer).__name__} "
                             f"({err})") from err
        if getattr(layer, "crossattention", None) is not None:
            raise ValueError(f"layer: {type(layer).__name__} has cross-attention (a decoder layer); "
                             "TransformerLayer is an encoder layer")
        act = getattr(inter, "intermediate_act_fn", None)
        approximate = hf_gelu_form(act)
        if approximate is None:
            raise ValueError(f"layer: activation {type(act).__name__} is not a GELU that bias_gelu computes "
                             f"(supported: {sorted(HF_GELU_CLASSES)})")
        if attn_out.LayerNorm.eps != out.LayerNorm.eps:
            raise ValueError(f"layer: the two LayerNorms use different eps ({attn_out.LayerNorm.eps}, "
                             f"{out.LayerNorm.eps})")
        new = cls(query.in_features, num_heads, inter.dense.out_features, attention_dropout=attn.dropout.p,
                  hidden_dropout=out.dropout.p, eps=out.LayerNorm.eps, approximate=approximate, backend=backend)
        new.to(device=query.weight.device, dtype=query.weight.dtype)
        with torch.no_grad():
            sa, ff = new.self_attention, new.feed_forward
            sa.qkv.weight.copy_(torch.cat([query.weight, key.weight, value.weight]))
            sa.qkv.bias.copy_(torch.cat([query.bias, key.bias, value.bias]))
            for ours, theirs in ((sa.output.dense, attn_out.dense), (ff.intermediate, inter.dense),
                                 (ff.output, out.dense), (sa.output.norm, attn_out.LayerNorm),
                                 (ff.norm, out.LayerNorm)):
                ours.weight.copy_(theirs.weight)
                ours.bias.copy_(theirs.bias)
        return new

    def extra_repr(self) -> str:
        return f"hidden_size={self.self_attention.qkv.in_features}, num_heads={self.self_attention.num_heads}"
