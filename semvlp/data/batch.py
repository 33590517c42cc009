"""PretrainingBatch: the packed inputs and targets of one pretraining step."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .packing import PackedLayout


@dataclass
class PretrainingBatch:
    """One packed batch. Targets are stored for the masked positions only, so the heads never run on the rest.

    Masked regions already have their features zeroed in `region_features`; their originals are in
    `mrm_feature_targets`.
    """

    input_ids: torch.Tensor             # (total_text,) int64, masked words already replaced
    region_features: torch.Tensor       # (total_regions, visual_feat_dim) float
    region_boxes: torch.Tensor          # (total_regions, visual_pos_dim) float
    layout: PackedLayout
    mlm_positions: torch.Tensor         # (n_mlm,) int64 indices into the packed text
    mlm_targets: torch.Tensor           # (n_mlm,) int64 original token ids
    mrm_positions: torch.Tensor         # (n_mrm,) int64 indices into the packed regions
    mrm_feature_targets: torch.Tensor   # (n_mrm, visual_feat_dim) float original features
    mrm_label_targets: torch.Tensor     # (n_mrm,) int64 object labels, -100 = unknown
    itm_labels: torch.Tensor            # (B,) int64, 1 = caption matches the image
    qa_labels: torch.Tensor             # (B,) int64 answer index, -100 = no question for this sample
    grounding_positions: torch.Tensor   # (n_ground,) int64 indices into the packed text of words inside phrases
    grounding_samples: torch.Tensor     # (n_ground,) int64 the sample each of those words belongs to
    grounding_targets: torch.Tensor     # (n_ground,) int64 the region its phrase names, counted within its sample
    token_type_ids: torch.Tensor | None = None  # (total_text,) int64

    def to(self, device, non_blocking: bool = False) -> "PretrainingBatch":
        moved = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                value = value.to(device, non_blocking=non_blocking)
            moved[f.name] = value
        return PretrainingBatch(**moved)

    @property
    def batch_size(self) -> int:
        return self.layout.batch_size
