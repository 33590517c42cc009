"""Box position features from normalised [x1, y1, x2, y2] boxes."""

from __future__ import annotations

import torch

BOX_FEATURE_DIMS = (4, 5, 7)


def box_features(boxes: torch.Tensor, dim: int) -> torch.Tensor:
    """(n, 4) normalised xyxy -> (n, dim): 4 = xyxy (LXMERT), 5 = xyxy + area, 7 = xyxy + w, h, area (UNITER)."""
    if dim not in BOX_FEATURE_DIMS:
        raise ValueError(f"dim: expected one of {BOX_FEATURE_DIMS} box features, got {dim}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes: expected shape (n, 4), got {tuple(boxes.shape)}")
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    extra = {4: [], 5: [w * h], 7: [w, h, w * h]}[dim]
    return torch.cat([boxes] + [e[:, None] for e in extra], dim=1)
