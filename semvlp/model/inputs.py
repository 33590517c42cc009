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

TokenBudget and `pad_batch` give every micro-batch the same shapes (for torch.compile and CUDA graphs): a fixed
number of text tokens, regions and sample slots, the rest filled by dummy segments that no loss sees.
"""

from __future__ import annotations

import dataclasses
import math
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
    def from_lengths(cls, text_lengths: Sequence[int], region_counts: Sequence[int],
                     static_max: tuple[int, int] | None = None) -> "PackedLayout":
        """Layout of samples with the given text lengths and region counts (CPU tensors).

        `static_max` (max text length, max regions) fixes the max lengths instead of taking them from the samples,
        so that batches of other lengths share them (the samples must stay within them)."""
        text = torch.as_tensor(list(text_lengths), dtype=torch.int64)
        regions = torch.as_tensor(list(region_counts), dtype=torch.int64)
        if text.dim() != 1 or text.numel() == 0:
            raise ValueError(f"text_lengths: expected a non-empty sequence of ints, got {list(text_lengths)}")
        if regions.shape != text.shape:
            raise ValueError(f"region_counts: expected {text.numel()} counts (one per sample), got {regions.numel()}")
        if (text < 0).any() or (regions < 0).any():
            raise ValueError(f"text_lengths/region_counts: expected non-negative counts, got "
                             f"{text.tolist()} / {regions.tolist()}")
        if static_max is not None and (int(text.max()) > static_max[0] or int(regions.max()) > static_max[1]):
            raise ValueError(f"static_max: expected samples of at most {static_max[0]} tokens and {static_max[1]} "
                             f"regions, got {int(text.max())} and {int(regions.max())}")
        max_text, max_regions = static_max or (int(text.max()), int(regions.max()))
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
            # An empty sample (a padding slot) at the end points at the last token, so that every index is valid.
            cls_index=text_start.clamp(max=max(int(joint.sum()) - 1, 0)),
            max_text_len=max_text,
            max_regions=max_regions,
            max_joint_len=max_text + max_regions if static_max else int(joint.max()),
            max_stream_len=max(max_text, max_regions) if static_max else int(stream_lengths.max()),
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
    mrm_valid: torch.Tensor | None = None   # (n_mrm,) bool, False = a padding slot (see pad_batch); None = all real

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


@dataclass(frozen=True)
class TokenBudget:
    """The fixed shapes of a token-budget micro-batch: `tokens` text tokens and regions in all, split between the
    two in proportion to the longest sample (`max_text_len` tokens, `max_regions` regions), and `max_samples`
    sample slots. Real samples fill as much as fits; `pad_batch` fills the rest with dummy segments of at most
    one longest sample each, in `dummy_slots` extra slots."""

    tokens: int
    max_samples: int
    max_text_len: int
    max_regions: int

    def __post_init__(self):
        for name in ("tokens", "max_samples", "max_text_len", "max_regions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.tokens < self.max_text_len + self.max_regions:
            raise ValueError(f"tokens: expected at least one longest sample ({self.max_text_len} text tokens + "
                             f"{self.max_regions} regions = {self.max_text_len + self.max_regions}), got {self.tokens}")

    @property
    def text_tokens(self) -> int:
        return self.tokens * self.max_text_len // (self.max_text_len + self.max_regions)

    @property
    def region_tokens(self) -> int:
        return self.tokens - self.text_tokens

    @property
    def dummy_slots(self) -> int:
        return max(math.ceil(self.text_tokens / self.max_text_len), math.ceil(self.region_tokens / self.max_regions))

    @property
    def slots(self) -> int:
        return self.max_samples + self.dummy_slots

    def fits(self, text_lengths: Sequence[int], region_counts: Sequence[int]) -> bool:
        """Whether samples of these lengths fit in one micro-batch."""
        return (len(text_lengths) <= self.max_samples and sum(text_lengths) <= self.text_tokens
                and sum(region_counts) <= self.region_tokens
                and all(t <= self.max_text_len for t in text_lengths)
                and all(r <= self.max_regions for r in region_counts))

    def check_sample(self, text_length: int, region_count: int) -> None:
        if text_length > self.max_text_len or region_count > self.max_regions:
            raise ValueError(f"token budget: a sample of {text_length} text tokens and {region_count} regions is "
                             f"longer than the budget's longest sample ({self.max_text_len} tokens, "
                             f"{self.max_regions} regions)")


def _split(total: int, chunk: int, parts: int) -> list[int]:
    """`total` as `parts` lengths of at most `chunk` each, the full ones first."""
    return [min(chunk, max(total - i * chunk, 0)) for i in range(parts)]


def _pad_rows(x: torch.Tensor, rows: int, value=0) -> torch.Tensor:
    return torch.cat([x, x.new_full((rows - x.shape[0],) + x.shape[1:], value)])


def pad_batch(batch: PretrainingBatch, budget: TokenBudget) -> PretrainingBatch:
    """The batch with the budget's fixed shapes: exactly `budget.text_tokens` text tokens, `budget.region_tokens`
    regions and `budget.slots` samples, and as many masked-word, masked-region and grounding slots as there are
    text tokens / regions / text tokens. Padding tokens (token id 0, zero features and boxes) sit in dummy
    segments after the real samples, unused sample slots are empty, and every padding target is ignored: -100
    labels, `mrm_valid` False. The real samples keep their positions, so their hidden states are unchanged."""
    layout = batch.layout
    text, regions = layout.text_lengths(), layout.region_counts()
    if not budget.fits(text, regions):
        raise ValueError(f"batch: {len(text)} samples of {sum(text)} text tokens and {sum(regions)} regions (longest "
                         f"{max(text)} and {max(regions)}) do not fit the token budget {budget}")
    empty = budget.max_samples - len(text)
    text += [0] * empty + _split(budget.text_tokens - sum(text), budget.max_text_len, budget.dummy_slots)
    regions += [0] * empty + _split(budget.region_tokens - sum(regions), budget.max_regions, budget.dummy_slots)
    padded_layout = PackedLayout.from_lengths(text, regions, static_max=(budget.max_text_len, budget.max_regions))
    n_text, n_regions, slots = budget.text_tokens, budget.region_tokens, budget.slots
    # Padding grounding slots score against the sample with the most regions: a row of only -inf would be NaN.
    fullest = max(range(batch.batch_size), key=lambda i: regions[i])
    mrm_valid = batch.mrm_valid
    if mrm_valid is None:
        mrm_valid = torch.ones_like(batch.mrm_positions, dtype=torch.bool)
    return PretrainingBatch(
        input_ids=_pad_rows(batch.input_ids, n_text),
        region_features=_pad_rows(batch.region_features, n_regions),
        region_boxes=_pad_rows(batch.region_boxes, n_regions),
        layout=padded_layout,
        mlm_positions=_pad_rows(batch.mlm_positions, n_text),
        mlm_targets=_pad_rows(batch.mlm_targets, n_text, -100),
        mrm_positions=_pad_rows(batch.mrm_positions, n_regions),
        mrm_feature_targets=_pad_rows(batch.mrm_feature_targets, n_regions),
        mrm_label_targets=_pad_rows(batch.mrm_label_targets, n_regions, -100),
        itm_labels=_pad_rows(batch.itm_labels, slots, -100),
        qa_labels=_pad_rows(batch.qa_labels, slots, -100),
        grounding_positions=_pad_rows(batch.grounding_positions, n_text),
        grounding_samples=_pad_rows(batch.grounding_samples, n_text, fullest),
        grounding_targets=_pad_rows(batch.grounding_targets, n_text, -100),
        token_type_ids=None if batch.token_type_ids is None else _pad_rows(batch.token_type_ids, n_text),
        mrm_valid=_pad_rows(mrm_valid, n_regions, False),
    )
