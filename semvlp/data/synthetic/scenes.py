"""Synthetic scenes: 2-6 coloured shapes on a noisy background, rendered with Pillow, with their boxes.

Every draw comes from a seeded numpy Generator, so a scene is a pure function of its seed. Region features
are computed from the rendered pixels inside each ground-truth box (see `hand_features`), so the model has to
read colour and shape from image evidence, not from the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (230, 220, 50),
    "purple": (140, 60, 190), "orange": (245, 140, 30), "white": (235, 235, 235), "pink": (245, 150, 200),
}
SHAPES = ("circle", "square", "triangle", "star")
# Colour-shape combinations that never occur in the training split: the generalisation split is made of
# scenes that contain at least one of them.
HELD_OUT_COMBOS = frozenset({("red", "triangle"), ("blue", "circle"), ("green", "star"), ("yellow", "square")})
SEEN_COMBOS = tuple((c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT_COMBOS)

IMAGE_SIZE = 128
BACKGROUND = 40
GRID = (6, 7)  # occupancy cells across, down
HUE_BINS = 16
HAND_FEATURE_DIM = 3 + HUE_BINS + 3 + GRID[0] * GRID[1]  # 64


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    box: tuple[int, int, int, int]  # pixel xyxy, x2/y2 exclusive

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass(frozen=True)
class Scene:
    image_id: str
    objects: tuple[SceneObject, ...]

    def count(self, shape: str | None = None, colour: str | None = None) -> int:
        return sum((shape is None or o.shape == shape) and (colour is None or o.colour == colour)
                   for o in self.objects)

    def has(self, colour: str, shape: str) -> bool:
        return self.count(shape, colour) > 0


def _place(rng: np.random.Generator, placed: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """A square box of random size that keeps a 2-pixel gap to every box already placed, or None."""
    for _ in range(50):
        size = int(rng.integers(18, 34))
        x, y = (int(v) for v in rng.integers(2, IMAGE_SIZE - size - 2, size=2))
        box = (x, y, x + size, y + size)
        if all(box[2] + 2 <= o[0] or o[2] + 2 <= box[0] or box[3] + 2 <= o[1] or o[3] + 2 <= box[1] for o in placed):
            return box
    return None


def sample_scene(image_id: str, rng: np.random.Generator, split: str = "train") -> Scene:
    """2-6 objects with distinct colour-shape combinations. split "novel" includes at least one held-out
    combination; other splits never include one."""
    count = int(rng.integers(2, 7))
    combos = [SEEN_COMBOS[i] for i in rng.choice(len(SEEN_COMBOS), size=count, replace=False)]
    if split == "novel":
        novel = sorted(HELD_OUT_COMBOS)
        pick = novel[int(rng.integers(len(novel)))]
        # Keep the combinations distinct: the held-out one replaces a draw of the same shape if there is one.
        same_shape = [i for i, (_, shape) in enumerate(combos) if shape == pick[1]]
        combos.pop(same_shape[0] if same_shape else 0)
        combos.insert(0, pick)  # placed first, so it always fits
    objects, boxes = [], []
    for colour, shape in combos:
        box = _place(rng, boxes)
        if box is None:
            break
        boxes.append(box)
        objects.append(SceneObject(colour, shape, box))
    return Scene(image_id, tuple(objects))


def binding_twin(scene: Scene, image_id: str, rng: np.random.Generator) -> Scene | None:
    """The same shapes in the same places with the colours permuted among them (a derangement over at
    least two distinct colours), or None when no valid permutation keeps the combinations allowed."""
    colours = [o.colour for o in scene.objects]
    for _ in range(20):
        order = rng.permutation(len(colours))
        swapped = [colours[i] for i in order]
        if swapped == colours:
            continue
        new = tuple(SceneObject(c, o.shape, o.box) for c, o in zip(swapped, scene.objects))
        if len({(o.colour, o.shape) for o in new}) == len(new) and not any(
                (o.colour, o.shape) in HELD_OUT_COMBOS for o in new):
            return Scene(image_id, new)
    return None


def _star(box) -> list[tuple[float, float]]:
    x1, y1, x2, y2 = box
    cx, cy, r = (x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2, (x2 - x1 - 1) / 2
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    return [(cx + rr * np.cos(a), cy - rr * np.sin(a)) for a, rr in zip(angles, radii)]


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """(IMAGE_SIZE, IMAGE_SIZE, 3) uint8 picture of the scene; colours jitter and the background is noisy."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[obj.colour]) + rng.integers(-20, 21, size=3), 0, 255))
        x1, y1, x2, y2 = obj.box
        inner = (x1, y1, x2 - 1, y2 - 1)
        if obj.shape == "circle":
            draw.ellipse(inner, fill=rgb)
        elif obj.shape == "square":
            draw.rectangle(inner, fill=rgb)
        elif obj.shape == "triangle":
            draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=rgb)
        else:
            draw.polygon(_star(obj.box), fill=rgb)
    noise = rng.integers(-8, 9, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.int16)
    return np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)


def _hue_saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rgb (n, 3) in [0, 1] -> hue in degrees [0, 360), saturation and value in [0, 1]."""
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    spread = np.maximum(high - low, 1e-6)
    r, g, b = rgb.T
    hue = np.where(high == r, (g - b) / spread % 6, np.where(high == g, (b - r) / spread + 2, (r - g) / spread + 4))
    return hue * 60.0, np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0), high


def foreground_mask(pixels: np.ndarray, background=BACKGROUND) -> np.ndarray:
    """(h, w) bool: pixels of an (h, w, 3) uint8 array that differ from the background colour (a grey level or
    an RGB triple) by more than 0.15 in some channel."""
    difference = np.abs(pixels.astype(np.float32) - np.asarray(background, np.float32)) / 255.0
    return difference.max(axis=-1) > 0.15


def hand_features(image: np.ndarray, box: tuple[int, int, int, int], background=BACKGROUND) -> np.ndarray:
    """(HAND_FEATURE_DIM,) float32 colour statistics and shape cues of the pixels inside a pixel xyxy box:
    mean RGB (3), a saturation-weighted hue histogram (16 bins, red centred on bin 0), mean saturation and
    value (2), the fraction of the box the shape fills (1) and its 6x7 occupancy grid (42). Shape pixels are
    those that differ from `background` (see `foreground_mask`)."""
    x1, y1, x2, y2 = box
    crop = image[y1:y2, x1:x2].astype(np.float32) / 255.0
    mask = foreground_mask(image[y1:y2, x1:x2], background)
    pixels = crop[mask] if mask.any() else crop.reshape(-1, 3)
    hue, saturation, value = _hue_saturation_value(pixels)
    bins = (((hue + 360 / HUE_BINS / 2) % 360) // (360 / HUE_BINS)).astype(np.int64)
    histogram = np.bincount(bins, weights=saturation, minlength=HUE_BINS) / len(pixels)
    cells = Image.fromarray(mask.astype(np.uint8) * 255).resize(GRID, Image.Resampling.BOX)
    occupancy = np.asarray(cells, dtype=np.float32).reshape(-1) / 255.0
    return np.concatenate([pixels.mean(axis=0), histogram, [saturation.mean(), value.mean(), mask.mean()],
                           occupancy]).astype(np.float32)


def region_features(scene: Scene, image: np.ndarray, feature_dim: int = HAND_FEATURE_DIM) -> np.ndarray:
    """(num_objects, feature_dim) float32: the hand features, zero-padded to feature_dim."""
    if feature_dim < HAND_FEATURE_DIM:
        raise ValueError(f"feature_dim: expected at least {HAND_FEATURE_DIM} (the hand features), got {feature_dim}")
    out = np.zeros((len(scene.objects), feature_dim), dtype=np.float32)
    for i, obj in enumerate(scene.objects):
        out[i, :HAND_FEATURE_DIM] = hand_features(image, obj.box)
    return out
