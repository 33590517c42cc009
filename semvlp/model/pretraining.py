"""SemVLPForPretraining: the backbone plus the pretraining heads and losses."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import SemVLPModel, init_bert_weights
from .config import SemVLPConfig
from .heads import (POSITION_BINS, AnswerHead, GroundingHead, MaskedLanguageModelHead, MaskedRegionHead, Pooler,
                    TokenMatchScore, position_bins)
from .inputs import PretrainingBatch
from .pretrained_io import PretrainedMixin


@dataclass
class PretrainingOutput:
    loss: torch.Tensor                              # weighted sum of the enabled tasks' losses
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # per task, unweighted
    mlm_logits: torch.Tensor | None = None          # (n_mlm, vocab)
    itm_logits: torch.Tensor | None = None          # (B, 2)
    qa_logits: torch.Tensor | None = None           # (B, num_qa_labels)
    mrm_label_logits: torch.Tensor | None = None    # (n_mrm, num_region_labels)
    grounding_logits: torch.Tensor | None = None    # (n_ground, max regions of a sample), -inf past its regions


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over targets != -100; 0 (with a graph) when there are none, never NaN."""
    total = F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")
    return total / (targets != -100).sum().clamp(min=1)


def _feature_regression(features: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean smooth-L1 over the feature values of the masked regions; `valid` (n_mrm,) bool leaves padding slots
    (of a token-budget batch) out."""
    if valid is None:
        return F.smooth_l1_loss(features.float(), targets.float(), reduction="sum") / max(features.numel(), 1)
    per_region = F.smooth_l1_loss(features.float(), targets.float(), reduction="none").sum(dim=1)
    return (per_region * valid).sum() / (valid.sum() * features.shape[1]).clamp(min=1)


class SemVLPForPretraining(PretrainedMixin, nn.Module):
    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.config = config
        self.semvlp = SemVLPModel(config)
        self.pooler = Pooler(config)
        self.mlm_head = MaskedLanguageModelHead(config)
        self.region_head = MaskedRegionHead(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.itm_token_head = TokenMatchScore(config) if config.itm_token_score else None
        self.qa_head = AnswerHead(config, config.num_qa_labels)
        self.grounding_head = GroundingHead(config)
        self.position_head = nn.Linear(config.hidden_size, 2 * POSITION_BINS)  # column bins, then row bins
        for module in (self.pooler, self.mlm_head, self.region_head, self.itm_head, self.qa_head,
                       self.grounding_head, self.position_head):
            module.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, batch: PretrainingBatch, mode: str = "single") -> PretrainingOutput:
        """Run the enabled pretraining tasks on a packed batch in "single" or "two" stream mode."""
        tasks, weights = self.config.tasks, self.config.loss_weights
        layout = batch.layout
        source = self.config.region_position_source if tasks["region_position"] else None
        hidden = self.semvlp(batch.input_ids, batch.region_features, batch.region_boxes, layout,
                             token_type_ids=batch.token_type_ids, mode=mode, output_layer=source)
        if source is not None:
            hidden, below = hidden
        out = PretrainingOutput(loss=hidden.new_zeros((), dtype=torch.float32))
        if tasks["mlm"]:
            masked = hidden.index_select(0, layout.text_index.index_select(0, batch.mlm_positions))
            out.mlm_logits = self.mlm_head(masked, self.semvlp.text_embeddings.word_embeddings.weight)
            out.losses["mlm"] = _cross_entropy(out.mlm_logits, batch.mlm_targets)
        if tasks["mrm_feat"] or tasks["mrm_label"]:
            masked = hidden.index_select(0, layout.region_index.index_select(0, batch.mrm_positions))
            features, out.mrm_label_logits = self.region_head(masked)
            if tasks["mrm_feat"]:
                out.losses["mrm_feat"] = _feature_regression(features, batch.mrm_feature_targets, batch.mrm_valid)
            if tasks["mrm_label"]:
                out.losses["mrm_label"] = _cross_entropy(out.mrm_label_logits, batch.mrm_label_targets)
        if tasks["itm"] or tasks["qa"]:
            pooled = self.pooler(hidden.index_select(0, layout.cls_index))
            if tasks["itm"]:
                out.itm_logits = self.itm_head(pooled)
                if self.itm_token_head is not None:
                    out.itm_logits = out.itm_logits.float() + self.itm_token_head(hidden, layout)
                out.losses["itm"] = _cross_entropy(out.itm_logits, batch.itm_labels)
            if tasks["qa"]:
                out.qa_logits = self.qa_head(pooled)
                out.losses["qa"] = _cross_entropy(out.qa_logits, batch.qa_labels)
        if tasks["grounding"]:
            words = hidden.index_select(0, layout.text_index.index_select(0, batch.grounding_positions))
            regions = hidden.index_select(0, layout.region_index)
            out.grounding_logits = self.grounding_head(words, batch.grounding_samples, regions,
                                                       layout.region_cu_seqlens, layout.max_regions)
            out.losses["grounding"] = _cross_entropy(out.grounding_logits, batch.grounding_targets)
        if tasks["region_position"]:
            out.losses["region_position"] = self._region_position_loss(below, batch)
        out.loss = sum(weights[name] * loss for name, loss in out.losses.items())
        return out

    def _region_position_loss(self, below: torch.Tensor, batch: PretrainingBatch) -> torch.Tensor:
        """Each word of a phrase that names a region (the grounding task's words, those of samples whose text is
        their own caption) predicts the column and row bins of that region's box centre from its state after
        layer `config.region_position_source`. It puts where each named region lies into the phrase early enough
        for the last layer to compare two phrases ("left of", "above")."""
        layout = batch.layout
        named = layout.region_cu_seqlens[:-1].long().index_select(0, batch.grounding_samples) + \
            batch.grounding_targets.clamp(min=0)
        bins = position_bins(batch.region_boxes.index_select(0, named))
        bins = bins.masked_fill((batch.grounding_targets == -100)[:, None], -100)
        logits = self.position_head(below.index_select(0, layout.text_index.index_select(0, batch.grounding_positions)))
        return sum(_cross_entropy(logits[:, axis * POSITION_BINS:(axis + 1) * POSITION_BINS], bins[:, axis])
                   for axis in (0, 1))
