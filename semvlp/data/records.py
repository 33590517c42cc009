"""What the readers produce: image records (regions) and text records (captions, questions), and the
handling of bad records: an error naming the file and the record, or a counted skip."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


class BadRecordError(ValueError):
    """A record that cannot be used; the message names the file and the record."""

    def __init__(self, path, record: str, reason: str):
        super().__init__(f"{path}: {record}: {reason} (pass --skip-bad-records to skip and count such records)")
        self.path, self.record, self.reason = str(path), record, reason


class BadRecords:
    """Raises on a bad record, or with skip=True counts it (per file and kind) and logs it."""

    def __init__(self, skip: bool = False):
        self.skip = skip
        self.counts: Counter = Counter()

    def report(self, path, record: str, kind: str, reason: str) -> None:
        if not self.skip:
            raise BadRecordError(path, record, reason)
        self.counts[(str(path), kind)] += 1
        logger.warning("skipped bad record: %s: %s: %s", path, record, reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def skipped(self, *paths) -> int:
        """How many records of these files were skipped."""
        names = {str(p) for p in paths}
        return sum(n for (path, _), n in self.counts.items() if path in names)

    def summary(self) -> str:
        if not self.counts:
            return "no bad records"
        per_file: dict[str, list[str]] = {}
        for (path, kind), n in sorted(self.counts.items()):
            per_file.setdefault(path, []).append(f"{n} {kind}")
        return "skipped bad records: " + "; ".join(f"{Path(p).name}: {', '.join(k)}" for p, k in per_file.items())


@dataclass
class ImageRecord:
    """One image's regions. Boxes are in pixels (x1, y1, x2, y2) of a width x height image."""

    image_id: str
    width: int
    height: int
    boxes: np.ndarray          # (n, 4) float32 pixel xyxy
    features: np.ndarray       # (n, feature_dim) float32
    object_ids: np.ndarray     # (n,) int64 object label, -1 = unknown
    attr_ids: np.ndarray       # (n,) int64 attribute label, -1 = unknown

    def normalised_boxes(self) -> np.ndarray:
        scale = np.array([self.width, self.height, self.width, self.height], dtype=np.float32)
        return np.clip(self.boxes / scale, 0.0, 1.0)


def check_image_record(record: ImageRecord, feature_dim: int | None,
                       num_region_labels: int | None = None) -> tuple[str, str] | None:
    """(kind, reason) when the record is unusable, None when it is fine. With `num_region_labels` (the model
    config's), an object label the region classifier has no class for is a bad record."""
    if not record.image_id:
        return "missing image id", "the image id is empty"
    n = record.boxes.shape[0] if record.boxes.ndim == 2 else -1
    if record.boxes.shape != (n, 4):
        return "wrong box size", f"boxes have shape {record.boxes.shape}, expected (num_boxes, 4)"
    if n == 0:
        return "no regions", "the image has no regions"
    if record.features.ndim != 2 or record.features.shape[0] != n:
        return "wrong feature size", f"features have shape {record.features.shape}, expected ({n}, feature_dim)"
    if feature_dim is not None and record.features.shape[1] != feature_dim:
        return "wrong feature size", f"{record.features.shape[1]} values per region, expected {feature_dim}"
    for name in ("object_ids", "attr_ids"):
        if getattr(record, name).shape != (n,):
            return "wrong label size", f"{name} has shape {getattr(record, name).shape}, expected ({n},)"
    if not np.isfinite(record.features).all():
        return "non-finite features", "NaN or inf in the region features"
    if not np.isfinite(record.boxes).all() or record.width <= 0 or record.height <= 0:
        return "bad boxes", f"non-finite boxes or image size {record.width}x{record.height}"
    if num_region_labels is not None and (record.object_ids >= num_region_labels).any():
        return ("object label out of range", f"object label {int(record.object_ids.max())} is not below the "
                f"model config's num_region_labels={num_region_labels}")
    return None


@dataclass(frozen=True)
class TextRecord:
    """A caption or a question about one image."""

    image_id: str
    text: str
    kind: str                                    # "caption" | "question"
    answer: str | None = None                    # questions: the answer (the most common human answer)
    category: str | None = None                  # caption granularity or question category
    hard_negatives: tuple[str, ...] = ()         # captions made false by one change
    attribute_spans: tuple[tuple[int, int], ...] = field(default=())  # grounded colour words (char spans)
    relation_spans: tuple[tuple[int, int], ...] = field(default=())   # spatial relation words (char spans)
    phrases: tuple[tuple[int, int, int], ...] = field(default=())      # (start, end, region index) of each phrase
    meaning: tuple = ()                          # synthetic captions: clauses `language.holds` can check
    answers: tuple[str, ...] = ()                # questions: every human answer (VQA has ten), for the VQA score


@dataclass(frozen=True)
class PairRecord:
    """An NLVR2-style example: a statement about two images, true or false (None: read without its label, for
    predictions)."""

    identifier: str
    text: str
    left_image_id: str
    right_image_id: str
    label: bool | None
