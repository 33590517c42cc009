"""Input embeddings: BERT text embeddings and region embeddings (projected feature + projected box)."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import LayerNorm
from .config import SemVLPConfig


class TextEmbeddings(nn.Module):
    """word + position + token type, LayerNorm, dropout (as BERT), on packed tokens."""

    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, position_ids, token_type_ids: (total_text,) int64 -> (total_text, hidden)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        summed = (self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
                  + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.norm(summed))


class RegionEmbeddings(nn.Module):
    """LayerNorm(feature projection) and LayerNorm(box projection) averaged (as LXMERT), plus a learned
    region-modality embedding, then LayerNorm and dropout.

    Features are first standardised per dimension with the `feature_mean` and `feature_std` buffers (identity
    until `set_feature_statistics` is called; saved with the weights). Hand-made or detector features mix
    dimensions of very different scales; without this the largest ones dominate the projection at
    initialisation and the model is slow to read the small ones (e.g. colour next to a shape's occupancy)."""

    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(config.visual_feat_dim))
        self.register_buffer("feature_std", torch.ones(config.visual_feat_dim))
        self.feature_projection = nn.Linear(config.visual_feat_dim, config.hidden_size)
        self.feature_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.box_projection = nn.Linear(config.visual_pos_dim, config.hidden_size)
        self.box_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.modality_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def init_projection_biases(self, std: float) -> None:
        """Masked regions arrive as all-zero features. With a zero bias their projection would be a constant
        vector, and LayerNorm's gradient at a constant input scales as 1/sqrt(eps) (1e6 for eps=1e-12)."""
        nn.init.normal_(self.feature_projection.bias, std=std)
        nn.init.normal_(self.box_projection.bias, std=std)

    @torch.no_grad()
    def set_feature_statistics(self, mean, std, min_std: float = 1e-3) -> None:
        """Standardise features with these per-dimension statistics (tensors or arrays) from here on (std clamped
        to min_std, so a constant dimension, e.g. zero padding, stays finite)."""
        dim = self.feature_mean.numel()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        for name, value in (("mean", mean), ("std", std)):
            if tuple(value.shape) != (dim,):
                raise ValueError(f"{name}: expected shape ({dim},) (visual_feat_dim), got {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"{name}: expected finite values")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=min_std))

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """features (total_regions, visual_feat_dim), boxes (total_regions, visual_pos_dim)
        -> (total_regions, hidden)."""
        # In the features' dtype: engines that cast the module (DeepSpeed bf16) leave the buffers in fp32.
        features = (features - self.feature_mean.to(features.dtype)) / self.feature_std.to(features.dtype)
        feature = self.feature_norm(self.feature_projection(features))
        box = self.box_norm(self.box_projection(boxes))
        return self.dropout(self.norm((feature + box) / 2 + self.modality_embedding))
