"""A corpus split: region features by image id, and the captions and questions about those images.

`load_corpus` reads one from a data folder in the real formats:

    DIR/features*.tsv | features*.h5 | features_npz/  region features of every split's images (several files
                                                      of a format are one store; ids: formats/image_ids.py)
    DIR/captions_<split>.json                         COCO captions
    DIR/vqa_questions_<split>.json                    VQA questions (with the next file)
    DIR/vqa_annotations_<split>.json                  VQA annotations
    DIR/nlvr2_<split>.json                            NLVR2 statements about pairs of images (`load_pairs`)

A split needs captions, questions or both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .formats import open_features, read_coco_captions, read_nlvr2, read_vqa
from .records import BadRecords, ImageRecord, PairRecord, TextRecord


class MemoryFeatures:
    """Image records held in memory (the synthetic data), with a FeatureStore's interface."""

    def __init__(self, records: list[ImageRecord]):
        self._records = {r.image_id: r for r in records}
        self.feature_dim = records[0].features.shape[1] if records else None

    def ids(self) -> list[str]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._records

    def num_regions(self, image_id: str) -> int:
        return len(self._records[image_id].features)

    def __getitem__(self, image_id: str) -> ImageRecord:
        return self._records[image_id]


@dataclass
class Corpus:
    features: object                                     # FeatureStore or MemoryFeatures
    texts: list[TextRecord]
    twins: dict[str, str] = field(default_factory=dict)  # image id -> id of its binding twin
    cache_dir: Path | None = None                        # where token ids are cached (token_cache.py); None: not

    def __post_init__(self):
        if not self.texts:
            raise ValueError("texts: expected at least one caption or question, got none")

    def feature_statistics(self, max_images: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """`feature_statistics` of this split's images."""
        return feature_statistics(self.features, {t.image_id for t in self.texts}, max_images)


def feature_statistics(features, image_ids, max_images: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation (float32) of the region features of these images, from at most
    `max_images` of them taken evenly from the sorted ids (a large store is not read whole)."""
    ids = sorted(image_ids)
    if not ids:
        raise ValueError("image_ids: expected at least one image, got none")
    picked = ids[::max(1, -(-len(ids) // max_images))]
    every = np.concatenate([features[i].features for i in picked]).astype(np.float64)
    return every.mean(axis=0).astype(np.float32), every.std(axis=0).astype(np.float32)


def split_files(folder, split: str) -> list[Path]:
    """The text files of `split` present in a data folder (captions, VQA questions, VQA annotations)."""
    names = (f"captions_{split}.json", f"vqa_questions_{split}.json", f"vqa_annotations_{split}.json")
    return [Path(folder) / name for name in names if (Path(folder) / name).exists()]


def load_corpus(folder, split: str, features=None, fmt: str | None = None, bad: BadRecords | None = None,
                feature_dim: int | None = None, num_region_labels: int | None = None,
                feature_files=None) -> Corpus:
    """The `split` of a data folder; pass `features` to share one opened store between splits (`feature_dim` and
    `num_region_labels`, the model config's, check the records of a store opened here; `feature_files`, paths or
    glob patterns inside the folder, names its feature files instead of the default ones). Every record is checked
    here, so a bad one is an error (or, with `bad.skip`, a counted skip) before any sample is drawn; a split left
    without any caption or question is a ValueError naming its files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder: expected a data folder, {folder} is not one")
    bad = bad or BadRecords()
    if features is None:
        features = open_features(folder, fmt, bad, feature_dim, num_region_labels, files=feature_files)
    captions = folder / f"captions_{split}.json"
    questions, answers = folder / f"vqa_questions_{split}.json", folder / f"vqa_annotations_{split}.json"
    present = split_files(folder, split)
    if not present:
        raise ValueError(f"folder: expected {captions.name} or {questions.name} with {answers.name} in {folder} "
                         f"for the {split!r} split")
    texts, twins = read_coco_captions(captions, features, bad) if captions.exists() else ([], {})
    if questions.exists() or answers.exists():
        texts += read_vqa(questions, answers, features, bad)
    if not texts:
        skipped = bad.skipped(*present)
        raise ValueError(f"{', '.join(map(str, present))}: no usable caption or question in the {split!r} split"
                         + (f" (all {skipped} records were skipped as bad)" if skipped else ""))
    return Corpus(features, texts, twins, cache_dir=folder)


def load_pairs(folder, split: str, features, bad: BadRecords | None = None) -> list[PairRecord]:
    """The NLVR2 statements of a split (DIR/nlvr2_<split>.json) whose images are in `features`."""
    path = Path(folder) / f"nlvr2_{split}.json"
    if not path.exists():
        raise ValueError(f"folder: expected {path.name} in {folder} for the {split!r} split")
    pairs = read_nlvr2(path, features, bad)
    if not pairs:
        raise ValueError(f"{path}: no usable statement")
    return pairs
