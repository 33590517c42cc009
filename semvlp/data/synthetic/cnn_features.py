"""Pooled CNN region features, the synthetic data's optional alternative to the hand features.

A small convolutional network with fixed weights drawn from a seed (nothing is downloaded, and the same seed
gives the same features on every machine) runs once over the whole image; each box then average-pools the
feature map on a 2x2 grid, as RoI pooling over a detector's backbone does. The network is untrained: random
convolutions keep colour and local shape apart well enough for the pretraining tasks to learn from, and the
features stand in for a detector's where a test of the model must not depend on hand-made ones.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CHANNELS = (16, 32)   # the hidden layers; the last layer has feature_dim / 4 channels (one per pooled cell)
STRIDES = (1, 2, 2)   # the feature map is 4x smaller than the image
GRID = 2              # pooled cells per side of a box


class RegionCNN:
    """(image, boxes) -> (num_boxes, feature_dim) float32 pooled features; feature_dim must divide by 4."""

    def __init__(self, feature_dim: int, seed: int = 0):
        if feature_dim <= 0 or feature_dim % (GRID * GRID):
            raise ValueError(f"feature_dim: expected a positive multiple of {GRID * GRID} for pooled CNN features, "
                             f"got {feature_dim}")
        generator = torch.Generator().manual_seed(seed)
        sizes = (3, *CHANNELS, feature_dim // (GRID * GRID))
        # He initialisation keeps the activations' scale steady through the ReLUs.
        self.weights = [torch.randn(c_out, c_in, 3, 3, generator=generator) * (2.0 / (9 * c_in)) ** 0.5
                        for c_in, c_out in zip(sizes[:-1], sizes[1:])]
        self.feature_dim = feature_dim
        self.scale = int(np.prod(STRIDES))

    @torch.no_grad()
    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """image (h, w, 3) uint8, boxes (n, 4) pixel xyxy -> (n, feature_dim) float32."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image: expected shape (h, w, 3), got {image.shape}")
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0 - 0.5
        for weight, stride in zip(self.weights, STRIDES):
            x = F.relu(F.conv2d(x, weight, stride=stride, padding=1))
        height, width = x.shape[2:]
        out = np.zeros((len(boxes), self.feature_dim), dtype=np.float32)
        for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.float64)):
            # The feature cells the box covers, at least one.
            left, top = min(int(x1 // self.scale), width - 1), min(int(y1 // self.scale), height - 1)
            right = max(int(np.ceil(x2 / self.scale)), left + 1)
            bottom = max(int(np.ceil(y2 / self.scale)), top + 1)
            cells = F.adaptive_avg_pool2d(x[:, :, top:bottom, left:right], GRID)
            out[i] = cells.reshape(-1).numpy()
        return out
