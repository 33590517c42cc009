"""SemVLPModel: text and region embeddings plus the shared encoder, on packed tokens."""

from __future__ import annotations

import torch
from torch import nn

from .config import SemVLPConfig
from .embeddings import RegionEmbeddings, TextEmbeddings
from .encoder import SharedEncoder
from .hf_bert import build_from_hf_bert
from .inputs import PackedLayout


def init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, std) weights, zero biases; LayerNorms keep their own reset."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class SemVLPModel(nn.Module):
    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.config = config
        self.text_embeddings = TextEmbeddings(config)
        self.region_embeddings = RegionEmbeddings(config)
        self.encoder = SharedEncoder(config)
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))
        self.region_embeddings.init_projection_biases(config.initializer_range)

    def forward(self, input_ids: torch.Tensor, region_features: torch.Tensor, region_boxes: torch.Tensor,
                layout: PackedLayout, *, token_type_ids: torch.Tensor | None = None,
                mode: str = "single", output_layer: int | None = None):
        """Encode a packed batch.

        Args:
            input_ids: (total_text,) int64 token ids, samples back to back as in `layout.text_cu_seqlens`.
            region_features: (total_regions, visual_feat_dim) float, as in `layout.region_cu_seqlens`.
            region_boxes: (total_regions, visual_pos_dim) float normalised box features.
            layout: the batch's PackedLayout, on the model's device.
            token_type_ids: optional (total_text,) int64 segment ids (default 0).
            mode: "single" (text and regions of a sample attend jointly) or "two" (each modality attends
                within itself, the plugged layers cross-attend).
            output_layer: also return the output of this layer (0-based).

        Returns:
            (total_tokens, hidden) in the layout's joint order; `layout.text_index` and
            `layout.region_index` pick out either modality. With `output_layer`, a pair: that and the same rows
            after the given layer.
        """
        if input_ids.shape != (layout.total_text,):
            raise ValueError(f"input_ids: expected shape ({layout.total_text},) from the layout, "
                             f"got {tuple(input_ids.shape)}")
        expected = (layout.total_regions, self.config.visual_feat_dim)
        if tuple(region_features.shape) != expected:
            raise ValueError(f"region_features: expected shape {expected}, got {tuple(region_features.shape)}")
        expected = (layout.total_regions, self.config.visual_pos_dim)
        if tuple(region_boxes.shape) != expected:
            raise ValueError(f"region_boxes: expected shape {expected}, got {tuple(region_boxes.shape)}")
        text = self.text_embeddings(input_ids, layout.text_position_ids, token_type_ids)
        regions = self.region_embeddings(region_features, region_boxes)
        hidden = torch.cat([text, regions.to(text.dtype)]).index_select(0, layout.joint_from_modality)
        return self.encoder(hidden, layout, mode, output_layer)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """A text-only pass over a padded batch, as BERT: (batch, seqlen) ids and 0/1 mask -> (batch, seqlen, hidden).

        Padding is removed before the encoder (no compute is spent on it) and its output rows are zero.
        Positions count from the start of the padded row, as Hugging Face BERT does.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected (batch, seqlen), got shape {tuple(input_ids.shape)}")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask: expected shape {tuple(input_ids.shape)} (that of input_ids), "
                             f"got {tuple(attention_mask.shape)}")
        if token_type_ids is not None and token_type_ids.shape != input_ids.shape:
            raise ValueError(f"token_type_ids: expected shape {tuple(input_ids.shape)} (that of input_ids), "
                             f"got {tuple(token_type_ids.shape)}")
        real = attention_mask.bool()
        batch, seqlen = input_ids.shape
        layout = PackedLayout.from_lengths(real.sum(dim=1).tolist(), [0] * batch).to(input_ids.device)
        positions = torch.arange(seqlen, device=input_ids.device).expand(batch, seqlen)
        types = None if token_type_ids is None else token_type_ids[real]
        text = self.text_embeddings(input_ids[real], positions[real], types)
        hidden = self.encoder(text, layout, mode="single")
        out = hidden.new_zeros(batch, seqlen, hidden.shape[-1])
        out[real] = hidden
        return out

    @classmethod
    def from_hf_bert(cls, path, **overrides) -> "SemVLPModel":
        """A model sized from a Hugging Face BERT checkpoint directory, with its weights loaded."""
        return build_from_hf_bert(cls, path, **overrides)
