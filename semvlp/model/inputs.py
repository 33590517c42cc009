"""The model's input types: PackedLayout and PretrainingBatch.

PackedLayout: where every text token and region sits in a packed (unpadded) batch, for both stream views.

The encoder works on one packed sequence of shape (total_tokens, hidden) in *joint order*: sample 0's text
tokens, then its regions, then sample 1's text, its regions, and so on. The same order serves both modes:

- single-stream attends within each sample: segments `joint_cu_seqlens` = [t0+r0, t1+r1, ...];
- two-stream self-attention attends within each modality of each sample: segments `stream_cu_seqlens` =
  [t0, r0, t1, r1, ...], one launch for both modalities;
- two-stream cross-attention uses queries in joint order with `stream_cu_seqlens`, and keys/values gathered
  with `cross_kv_index` into the swapped order [r0, t0, r1, t1, ...] with `cross_cu_seqlens_k`, so text
  segment i meets its own sample's regions and region segment i its own sample's text, in one launch.

Everything is built on the CPU once per batch (by the collate function), with the max lengths as Python
ints, so the model never syncs with the device to size its work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int32)


def _segment_arange(lengths: torch.Tensor) -> torch.Tensor:
    """[0..l0-1, 0..l1-1, ...] for the given segment lengths."""
    starts = torch.cumsum(lengths, 0) - lengths
    return torch.arange(int(lengths.sum())) - torch.repeat_interleave(starts, lengths)


def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([a, b], dim=1).reshape(-1)


@dataclass(frozen=True)
class PackedLayout:
    """Index tensors of one packed batch (all int32 offsets / int64 indices on one device)."""

    text_cu_seqlens: torch.Tensor      # (B+1,) int32 offsets of each sample's text in packed text order
    region_cu_seqlens: torch.Tensor    # (B+1,) int32 offsets of each sample's regions in packed region order
    joint_cu_seqlens: torch.Tensor     # (B+1,) int32 per-sample [text; regions] segments (single-stream)
    stream_cu_seqlens: torch.Tensor    # (2B+1,) int32 [t0, r0, t1, r1, ...] segments (two-stream)
    cross_cu_seqlens_k: torch.Tensor   # (2B+1,) int32 [r0, t0, r1, t1, ...] segments of the swapped keys
    cross_kv_index: torch.Tensor       # (total,) int64 joint position of each key in swapped order
    joint_from_modality: torch.Tensor  # (total,) int64 row of cat([text, regions]) at each joint position
    text_index: torch.Tensor           # (total_text,) int64 joint position of each text token
    region_index: torch.Tensor         # (total_regions,) int64 joint position of each region
    text_position_ids: torch.Tensor    # (total_text,) int64 position of each token within its sample
    cls_index: torch.Tensor            # (B,) int64 joint position of each sample's first text token
    max_text_len: int
    max_regions: int
    max_joint_len: int
    max_stream_len: int

    @classmethod
    def from_lengths(cls, text_lengths: Sequence[int], region_counts: Sequence[int]) -> "PackedLayout":
        """Layout of samples with the given text lengths and region counts (CPU tensors)."""
        text = torch.as_tensor(list(text_lengths), dtype=torch.int64)
        regions = torch.as_tensor(list(region_counts), dtype=torch.int64)
        if text.dim() != 1 or text.numel() == 0:
            raise ValueError(f"text_lengths: expected a non-empty sequence of ints, got {list(text_lengths)}")
        if regions.shape != text.shape:
            raise ValueError(f"region_counts: expected {text.numel()} counts (one per sample), got {regions.numel()}")
        if (text < 0).any() or (regions < 0).any():
            raise ValueError(f"text_lengths/region_counts: expected non-negative counts, got "
                             f"{text.tolist()} / {regions.tolist()}")
        joint = text + regions
        joint_start = torch.cumsum(joint, 0) - joint
        text_start, region_start = joint_start, joint_start + text
        total_text = int(text.sum())

        text_index = torch.repeat_interleave(text_start, text) + _segment_arange(text)
        region_index = torch.repeat_interleave(region_start, regions) + _segment_arange(regions)
        joint_from_modality = torch.empty(int(joint.sum()), dtype=torch.int64)
        joint_from_modality[text_index] = torch.arange(total_text)
        joint_from_modality[region_index] = total_text + torch.arange(int(regions.sum()))

        swapped_lengths = _interleave(regions, text)
        swapped_starts = _interleave(region_start, text_start)
        cross_kv_index = torch.repeat_interleave(swapped_starts, swapped_lengths) + _segment_arange(swapped_lengths)

        stream_lengths = _interleave(text, regions)
        return cls(
            text_cu_seqlens=_offsets(text),
            region_cu_seqlens=_offsets(regions),
            joint_cu_seqlens=_offsets(joint),
            stream_cu_seqlens=_offsets(stream_lengths),
            cross_cu_seqlens_k=_offsets(swapped_lengths),
            cross_kv_index=cross_kv_index,
            joint_from_modality=joint_from_modality,
            text_index=text_index,
            region_index=region_index,
            text_position_ids=_segment_arange(text),
            cls_index=text_start,
            max_text_len=int(text.max()),
            max_regions=int(regions.max()),
            max_joint_len=int(joint.max()),
            max_stream_len=int(stream_lengths.max()),
        )

    @property
    def batch_size(self) -> int:
        return self.text_cu_seqlens.numel() - 1

    @property
    def total_text(self) -> int:
        return self.text_index.numel()

    @property
    def total_regions(self) -> int:
        return self.region_index.numel()

    @property
    def total_tokens(self) -> int:
        return self.joint_from_modality.numel()

    def text_lengths(self) -> list[int]:
        return (self.text_cu_seqlens[1:] - self.text_cu_seqlens[:-1]).tolist()

    def region_counts(self) -> list[int]:
        return (self.region_cu_seqlens[1:] - self.region_cu_seqlens[:-1]).tolist()

    def to(self, device, non_blocking: bool = False) -> "PackedLayout":
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device, non_blocking=non_blocking)
        return PackedLayout(**moved)


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

    def to(self, device, non_blocking: bool = False, *, feature_dtype: torch.dtype | None = None
           ) -> "PretrainingBatch":
        """The batch on `device`; `feature_dtype` also casts the region inputs (features and boxes) to the
        model's compute dtype."""
        moved = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                value = value.to(device, non_blocking=non_blocking)
            moved[f.name] = value
        if feature_dtype is not None:
            moved["region_features"] = moved["region_features"].to(feature_dtype)
            moved["region_boxes"] = moved["region_boxes"].to(feature_dtype)
        return PretrainingBatch(**moved)

    @property
    def batch_size(self) -> int:
        return self.layout.batch_size
