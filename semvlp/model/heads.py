"""Prediction heads of pretraining: MLM (tied decoder), masked region modelling, ITM's per-token score, image QA,
phrase grounding; and the bins of the region-position task's targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import LayerNorm
from .config import SemVLPConfig
from .inputs import PackedLayout

# Bins per image axis of the region-position task: 8 bins of 16 pixels on a 128-pixel image, finer than the
# 10-pixel centre offset from which the synthetic captions call one object left of or above another.
POSITION_BINS = 8


class Pooler(nn.Module):
    """dense + tanh on each sample's first text token (BERT's pooler)."""

    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, cls_hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(cls_hidden))


class Transform(nn.Module):
    """dense + GELU + LayerNorm, the shared first step of BERT's and LXMERT's token heads."""

    def __init__(self, config: SemVLPConfig, out_features: int | None = None):
        super().__init__()
        out_features = out_features or config.hidden_size
        self.dense = nn.Linear(config.hidden_size, out_features)
        self.norm = LayerNorm(out_features, eps=config.layer_norm_eps)
        self.approximate = config.gelu_approximate

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(hidden), approximate=self.approximate))


class MaskedLanguageModelHead(nn.Module):
    """Transform, then the vocabulary projection with the word-embedding matrix (tied) and its own bias."""

    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.transform = Transform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (n_masked, hidden), word_embeddings (vocab, hidden) -> logits (n_masked, vocab)."""
        return F.linear(self.transform(hidden), word_embeddings, self.bias)


class MaskedRegionHead(nn.Module):
    """Feature regression and object-label classification of masked regions."""

    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.transform = Transform(config)
        self.feature = nn.Linear(config.hidden_size, config.visual_feat_dim)
        self.label = nn.Linear(config.hidden_size, config.num_region_labels)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.transform(hidden)
        return self.feature(shared), self.label(shared)


class AnswerHead(nn.Module):
    """Two-layer classifier over the pooled output (LXMERT's QA head shape)."""

    def __init__(self, config: SemVLPConfig, num_labels: int):
        super().__init__()
        self.transform = Transform(config, 2 * config.hidden_size)
        self.classifier = nn.Linear(2 * config.hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transform(pooled))


class TokenMatchScore(nn.Module):
    """ITM evidence from every text token: each token scores (no match, match), and each sample keeps the highest
    score of its tokens in each column. One word the image contradicts ("left" where the image shows "right")
    can then decide the pair, where the pooled first token tends to average it away among the words that agree.

    It starts at zero, so ITM starts from the pooled score alone: a random start adds each sample's largest random
    token score, which at one seed of the main job held ITM's loss back by about 200 of its 700 steps."""

    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.score = nn.Linear(config.hidden_size, 2)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """Encoder output in joint order -> (B, 2) float32; 0 for a sample without text tokens (an empty slot of a
        token-budget batch)."""
        cu = layout.text_cu_seqlens
        lengths = (cu[1:] - cu[:-1]).long()
        owner = torch.repeat_interleave(torch.arange(len(lengths), device=hidden.device), lengths,
                                        output_size=layout.total_text)
        scores = self.score(hidden.index_select(0, layout.text_index)).float()
        return scores.new_zeros(len(lengths), 2).scatter_reduce(0, owner[:, None].expand(-1, 2), scores, "amax",
                                                                include_self=False)


class GroundingHead(nn.Module):
    """Phrase grounding: scores each word of a phrase against the regions of its own sample (scaled dot product
    of projected word and region states), so training can ask which region the phrase names."""

    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.word = nn.Linear(config.hidden_size, config.hidden_size)
        self.region = nn.Linear(config.hidden_size, config.hidden_size)
        self.scale = config.hidden_size ** -0.5

    def forward(self, words: torch.Tensor, word_samples: torch.Tensor, regions: torch.Tensor,
                region_cu_seqlens: torch.Tensor, max_regions: int) -> torch.Tensor:
        """words (n, hidden) of samples word_samples (n,); regions (total_regions, hidden) packed by
        region_cu_seqlens (B+1,) -> logits (n, max_regions) over each word's own regions, -inf past their count."""
        start = region_cu_seqlens[word_samples].long()
        count = region_cu_seqlens[word_samples + 1].long() - start
        columns = torch.arange(max_regions, device=words.device)
        index = (start[:, None] + columns).clamp(max=max(regions.shape[0] - 1, 0))
        scores = (self.word(words) * self.scale) @ self.region(regions).T
        return scores.gather(1, index).masked_fill(columns >= count[:, None], float("-inf"))


def position_bins(boxes: torch.Tensor) -> torch.Tensor:
    """(n, >= 4) box features starting with normalised xyxy -> (n, 2) int64 column and row bins of the centres;
    -100 (no target) for boxes without area (padding)."""
    xyxy = boxes[:, :4].float()
    centres = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    bins = (centres * POSITION_BINS).long().clamp(0, POSITION_BINS - 1)
    has_area = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return bins.masked_fill(~has_area[:, None], -100)
