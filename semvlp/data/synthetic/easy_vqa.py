"""easy-VQA, read from its PyPI package `easy-vqa` (an optional dependency that ships the images and the
questions, so nothing is downloaded) and written in the real formats.

The package holds 64x64 pictures of one coloured shape on a light background (4,000 training and 1,000 test
images), 38,575 training and 9,673 test questions, and 13 answers. Each picture becomes one region: the box
around the pixels that differ from the background colour, with the same hand features as the synthetic scenes
(`semvlp.data.synthetic.scenes.hand_features`), so a model pretrained on those reads easy-VQA regions as it reads
its own.
A question's category is the kind of its answer: shape, colour or yes/no.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..formats import FEATURE_FORMATS, write_features, write_vqa
from ..records import ImageRecord
from .scenes import HAND_FEATURE_DIM, foreground_mask, hand_features

PACKAGE = "easy-vqa"
SPLITS = ("train", "test")
# Both splits number their images from 0; in the feature files test images start at this id.
_ID_BASE = {"train": 0, "test": 100_000}
_SHAPES = ("circle", "rectangle", "triangle")


def _package():
    try:
        import easy_vqa
    except ImportError as err:
        raise ImportError(f"easy-VQA needs the optional package {PACKAGE!r}, which ships its images and questions "
                          f"(nothing is downloaded): pip install {PACKAGE}") from err
    return easy_vqa


def background_colour(image: np.ndarray) -> np.ndarray:
    """The most common RGB value on the picture's border."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    values, counts = np.unique(border, axis=0, return_counts=True)
    return values[counts.argmax()]


def image_record(image_id: str, image: np.ndarray, feature_dim: int = HAND_FEATURE_DIM) -> ImageRecord:
    """One region: the box around the shape (the whole picture if nothing differs from the background)."""
    if feature_dim < HAND_FEATURE_DIM:
        raise ValueError(f"feature_dim: expected at least {HAND_FEATURE_DIM} (the hand features), got {feature_dim}")
    height, width = image.shape[:2]
    background = background_colour(image)
    rows, cols = np.nonzero(foreground_mask(image, background))
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1) if len(rows) else (
        0, 0, width, height)
    features = np.zeros((1, feature_dim), dtype=np.float32)
    features[0, :HAND_FEATURE_DIM] = hand_features(image, box, background)
    return ImageRecord(image_id, width, height, np.array([box], np.float32), features, np.full(1, -1, np.int64),
                       np.full(1, -1, np.int64))


def answer_category(answer: str, answers: list[str]) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    if answer in _SHAPES:
        return "shape"
    if answer in answers:
        return "colour"
    raise ValueError(f"answer: {answer!r} is not one of easy-VQA's answers {answers}")


def load_split(split: str, feature_dim: int = HAND_FEATURE_DIM, limit: int | None = None,
               progress: bool = True) -> tuple[list[ImageRecord], list[dict]]:
    """The split's image records and its questions as write_vqa items; `limit` keeps the first images only."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    package = _package()
    paths = package.get_train_image_paths() if split == "train" else package.get_test_image_paths()
    texts, answers, image_ids = package.get_train_questions() if split == "train" else package.get_test_questions()
    vocabulary = package.get_answers()
    keep = sorted(paths)[:limit] if limit is not None else sorted(paths)
    records = []
    for n in tqdm(keep, desc=f"easy-VQA {split} images", disable=not progress, leave=False):
        image = np.asarray(Image.open(paths[n]).convert("RGB"))
        records.append(image_record(str(_ID_BASE[split] + n), image, feature_dim))
    kept = set(keep)
    items = [{"image_id": _ID_BASE[split] + n, "question": q, "answer": a,
              "category": answer_category(a, vocabulary), "answer_type": "yes/no" if a in ("yes", "no") else "other"}
             for q, a, n in zip(texts, answers, image_ids) if n in kept]
    return records, items


def write_easy_vqa(folder, feature_dim: int = HAND_FEATURE_DIM, formats: tuple[str, ...] = ("tsv",),
                   limit: int | None = None, progress: bool = True) -> dict[str, Counter]:
    """features.<fmt> and vqa_{questions,annotations}_{train,test}.json in `folder`; returns the answer counts of
    each split. Each question has its one answer (so the VQA score is an exact match)."""
    unknown = [f for f in formats if f not in FEATURE_FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats: expected some of {list(FEATURE_FORMATS)}, got {list(formats)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records, counts = [], {}
    for split in SPLITS:
        split_records, items = load_split(split, feature_dim, limit, progress)
        records += split_records
        write_vqa(folder / f"vqa_questions_{split}.json", folder / f"vqa_annotations_{split}.json", items,
                  human_answers=1)
        counts[split] = Counter(it["answer"] for it in items)
    for fmt in formats:
        write_features(folder, fmt, records)
    return counts
