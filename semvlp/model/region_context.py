"""RegionContext: each region gathers the other regions of its image, weighted by where they lie relative to it.

A spatial relation ("a red circle left of a blue square") asks the model to compare the positions of two regions.
Attention over region embeddings can only do that by learning to subtract coordinates carried inside the
embeddings. Here each of `region_context_heads` heads weighs the other regions of the same image by a small MLP
of their box geometry relative to the region (centre offset and log size ratios), independent of their content,
so a head can learn "the regions to my right"; the region's embedding then carries what lies there, and a
relation becomes a match of attributes, which the model already reads.

Regions are gathered per image into a (batch, max_regions) grid from the layout's offsets (static shapes: no
data-dependent indexing, so torch.compile traces it whole) and scattered back to the packed order.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import LayerNorm
from .config import SemVLPConfig
from .inputs import PackedLayout

# Centre offsets are in image widths (boxes are normalised); scaled so that a clear relation (0.1-0.5 of the
# image) reaches the MLP at the size of its initial weights' reach.
_OFFSET_SCALE = 4.0
_MIN_SIZE = 1e-3
_PAIR_HIDDEN = 32


class RegionContext(nn.Module):
    def __init__(self, config: SemVLPConfig):
        super().__init__()
        self.heads = config.region_context_heads
        self.pair_mlp = nn.Sequential(nn.Linear(4, _PAIR_HIDDEN), nn.ReLU(), nn.Linear(_PAIR_HIDDEN, self.heads))
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def init_pair_weights(self) -> None:
        """Pair weights at a scale where the heads already prefer some relative positions over others: with the
        small initialisation of the other weights their logits barely vary, and the heads stay uniform."""
        first, last = self.pair_mlp[0], self.pair_mlp[2]
        nn.init.normal_(first.weight, std=1.0)
        nn.init.normal_(first.bias, std=1.0)
        nn.init.normal_(last.weight, std=_PAIR_HIDDEN ** -0.5 * 3.0)

    def forward(self, regions: torch.Tensor, boxes: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """regions (total_regions, hidden), boxes (total_regions, visual_pos_dim) with x1, y1, x2, y2 first
        -> (total_regions, hidden): LayerNorm(regions + the gathered context)."""
        total, hidden = regions.shape
        if total == 0 or layout.max_regions == 0:
            return regions
        starts = layout.region_cu_seqlens[:-1].long()
        counts = layout.region_cu_seqlens[1:].long() - starts
        slots = torch.arange(layout.max_regions, device=regions.device)
        index = (starts[:, None] + slots).clamp(max=total - 1)          # (batch, max_regions)
        valid = slots < counts[:, None]
        grid = regions[index]                                            # (batch, R, hidden)

        box = boxes[index][..., :4].float()
        centre = (box[..., :2] + box[..., 2:]) / 2
        size = (box[..., 2:] - box[..., :2]).clamp(min=_MIN_SIZE)
        # pair (i, j): where region j lies relative to region i
        offset = (centre[:, None, :, :] - centre[:, :, None, :]) * _OFFSET_SCALE
        log_ratio = torch.log(size[:, None, :, :] / size[:, :, None, :])
        logits = self.pair_mlp(torch.cat([offset, log_ratio], -1).to(regions.dtype)).float()  # (batch, R, R, heads)
        others = valid[:, None, :] & ~torch.eye(layout.max_regions, dtype=torch.bool, device=regions.device)
        logits = logits.masked_fill(~others[..., None], torch.finfo(logits.dtype).min)
        # A region alone in its image (or a padding slot) gathers nothing: its masked row is zeroed after softmax.
        weights = (logits.softmax(dim=2) * others[..., None]).to(regions.dtype)

        batch, slots_per_image = index.shape
        values = self.value(grid).view(batch, slots_per_image, self.heads, hidden // self.heads)
        context = torch.einsum("bijh,bjhd->bihd", weights, values).reshape(batch, slots_per_image, hidden)
        context = self.output(context) * valid[..., None]
        # Back to packed order: every region is one valid slot; the clamped padding slots add zeros.
        packed = torch.zeros_like(regions).index_add_(0, index.flatten(), context.reshape(-1, hidden))
        return self.norm(regions + self.dropout(packed))
