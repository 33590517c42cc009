"""Downstream models on the shared backbone: question answering, image-text matching, paired-image reasoning.

Each takes the packed inputs of `SemVLPModel.forward` and returns logits; the losses are functions below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import SemVLPModel, init_bert_weights
from .config import SemVLPConfig
from .heads import AnswerHead, Pooler, TokenMatchScore
from .inputs import PackedLayout
from .pretrained_io import PretrainedMixin


class _PooledModel(PretrainedMixin, nn.Module):
    """Backbone + BERT pooler over each sample's first text token; save_pretrained / from_pretrained /
    push_to_hub from PretrainedMixin."""

    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.config = config
        self.semvlp = SemVLPModel(config)
        self.pooler = Pooler(config)

    def _init_new_modules(self, *modules: nn.Module) -> None:
        for module in (self.pooler,) + modules:
            module.apply(lambda m: init_bert_weights(m, self.config.initializer_range))

    def pooled(self, input_ids, region_features, region_boxes, layout: PackedLayout, token_type_ids=None,
               mode: str = "single") -> torch.Tensor:
        hidden = self.semvlp(input_ids, region_features, region_boxes, layout, token_type_ids=token_type_ids,
                             mode=mode)
        return self.pooler(hidden.index_select(0, layout.cls_index))


class SemVLPForQuestionAnswering(_PooledModel):
    """Answer classifier over a fixed answer vocabulary: (B,) samples -> (B, num_answers) logits."""

    _pretrained_args = ("num_answers",)

    def __init__(self, config: SemVLPConfig, num_answers: int):
        super().__init__(config)
        if num_answers < 1:
            raise ValueError(f"num_answers: expected a positive int, got {num_answers}")
        self.num_answers = num_answers
        self.answer_head = AnswerHead(config, num_answers)
        self._init_new_modules(self.answer_head)

    def forward(self, input_ids, region_features, region_boxes, layout, token_type_ids=None, mode="single"):
        return self.answer_head(self.pooled(input_ids, region_features, region_boxes, layout, token_type_ids, mode))


class SemVLPForImageTextMatching(_PooledModel):
    """Match / no-match logits (B, 2); its matching logit ranks candidates for retrieval. With
    `config.itm_token_score`, each sample's highest per-token score is added, as in pretraining."""

    def __init__(self, config: SemVLPConfig):
        super().__init__(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.itm_token_head = TokenMatchScore(config) if config.itm_token_score else None
        self._init_new_modules(self.itm_head)

    def forward(self, input_ids, region_features, region_boxes, layout, token_type_ids=None, mode="single"):
        hidden = self.semvlp(input_ids, region_features, region_boxes, layout, token_type_ids=token_type_ids,
                             mode=mode)
        logits = self.itm_head(self.pooler(hidden.index_select(0, layout.cls_index)))
        return logits if self.itm_token_head is None else logits.float() + self.itm_token_head(hidden, layout)


class SemVLPForPairedReasoning(_PooledModel):
    """NLVR2-style: one statement, two images -> true/false logits (B, 2).

    The packed batch holds 2B samples: samples 2i and 2i+1 pair the statement of example i with its left and
    right image; their pooled outputs are concatenated and classified.
    """

    def __init__(self, config: SemVLPConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.classifier = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.GELU(),
                                        nn.LayerNorm(2 * hidden, eps=config.layer_norm_eps), nn.Linear(2 * hidden, 2))
        self._init_new_modules(self.classifier)

    def forward(self, input_ids, region_features, region_boxes, layout, token_type_ids=None, mode="single"):
        if layout.batch_size % 2:
            raise ValueError(f"layout: expected an even number of samples (two per statement), "
                             f"got {layout.batch_size}")
        pooled = self.pooled(input_ids, region_features, region_boxes, layout, token_type_ids, mode)
        return self.classifier(pooled.view(-1, 2 * pooled.shape[-1]))


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """VQA's binary cross-entropy against soft answer scores (B, num_answers), scaled by the answer count as
    is usual for VQA classifiers so its size does not depend on the vocabulary."""
    if targets.shape != logits.shape:
        raise ValueError(f"targets: expected shape {tuple(logits.shape)} (that of logits), got {tuple(targets.shape)}")
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float()) * logits.shape[-1]


def load_backbone(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Copy the pretrained weights a downstream model shares with SemVLPForPretraining (the backbone, the pooler
    and, for matching, the ITM heads) from its state_dict; returns the keys of `model` left unfilled."""
    own = model.state_dict()
    shared = {k: v for k, v in state_dict.items()
              if k in own and k.split(".")[0] in ("semvlp", "pooler", "itm_head", "itm_token_head")}
    if not any(k.startswith("semvlp.") for k in shared):
        raise ValueError("state_dict: expected the 'semvlp.*' keys of a SemVLPForPretraining state_dict, found none")
    for key, value in shared.items():
        if value.shape != own[key].shape:
            raise ValueError(f"state_dict: {key} has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(own[key].shape)}")
    missing, _ = model.load_state_dict(shared, strict=False)
    return sorted(missing)
