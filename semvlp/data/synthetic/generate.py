"""The embedded synthetic dataset: seeded scenes, their region features, captions, questions and NLVR2-style
statements about pairs of scenes, in four splits (train; val = new scenes of the same distribution; novel =
scenes with held-out colour-shape combinations; test = new scenes for downstream evaluation, which pretraining
never reads), kept in memory or written out in the real formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..corpus import Corpus, MemoryFeatures
from ..formats import FEATURE_FORMATS, write_coco_captions, write_features, write_nlvr2, write_vqa
from ..records import ImageRecord, TextRecord
from .cnn_features import RegionCNN
from .language import Caption, Question, SceneLanguage
from .paired import paired_statements
from .scenes import (COLOURS, HAND_FEATURE_DIM, IMAGE_SIZE, SHAPES, Scene, binding_twin, region_features, render,
                     sample_scene)

SPLITS = ("train", "val", "novel", "test")
# Image ids are integers (as in COCO); each split has its own range.
_ID_BASE = {"train": 0, "val": 10_000_000, "novel": 20_000_000, "test": 30_000_000}
# Every synthetic question has one true answer, given by as many annotators as VQA has.
HUMAN_ANSWERS = 10
_COLOUR_INDEX = {c: i for i, c in enumerate(COLOURS)}
# Region features: "hand" (colour statistics and shape cues, the default) or "cnn" (pooled CNN features).
REGION_FEATURES = ("hand", "cnn")


@dataclass
class SyntheticImage:
    record: ImageRecord
    captions: list[Caption]
    questions: list[Question]
    twin: str | None


def _image_record(scene: Scene, image: np.ndarray, feature_dim: int, cnn: RegionCNN | None) -> ImageRecord:
    boxes = np.array([o.box for o in scene.objects], np.float32)
    return ImageRecord(scene.image_id, IMAGE_SIZE, IMAGE_SIZE, boxes,
                       region_features(scene, image, feature_dim) if cnn is None else cnn(image, boxes),
                       np.array([SHAPES.index(o.shape) for o in scene.objects], np.int64),
                       np.array([_COLOUR_INDEX[o.colour] for o in scene.objects], np.int64))


def generate_split(split: str, count: int, seed: int = 0, feature_dim: int = HAND_FEATURE_DIM,
                   captions_per_image: int = 5, questions_per_image: int = 3,
                   twin_fraction: float = 0.2, features: str = "hand") -> list[SyntheticImage]:
    """`count` images of one split. A `twin_fraction` of them come in pairs that differ only in which colour
    binds to which shape. `features`: one of REGION_FEATURES (the CNN's weights are seeded by `seed`)."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if features not in REGION_FEATURES:
        raise ValueError(f"features: expected one of {REGION_FEATURES}, got {features!r}")
    cnn = RegionCNN(feature_dim, seed) if features == "cnn" else None
    out: list[SyntheticImage] = []
    while len(out) < count:
        k = len(out)
        rng = np.random.default_rng([seed, SPLITS.index(split), k])
        image_id = str(_ID_BASE[split] + k)
        scene = sample_scene(image_id, rng, split)
        scenes = [scene]
        if split != "novel" and k + 1 < count and rng.random() < twin_fraction:
            twin = binding_twin(scene, str(_ID_BASE[split] + k + 1), rng)
            if twin is not None:
                scenes.append(twin)
        for s in scenes:
            language = SceneLanguage(s, rng)
            twin_id = next((t.image_id for t in scenes if t is not s), None)
            out.append(SyntheticImage(_image_record(s, render(s, rng), feature_dim, cnn),
                                      language.captions(captions_per_image), language.questions(questions_per_image),
                                      twin_id))
    return out


def _frozen(meaning) -> tuple:
    return tuple(tuple(clause) for clause in meaning)


def to_corpus(images: list[SyntheticImage]) -> Corpus:
    """The in-memory corpus: the same records, in the same order, as reading the written files gives."""
    texts = [TextRecord(im.record.image_id, c.text, "caption", category=c.kind, hard_negatives=tuple(c.hard_negatives),
                        attribute_spans=tuple(tuple(s) for s in c.attribute_spans),
                        relation_spans=tuple(tuple(s) for s in c.relation_spans),
                        phrases=tuple((*p["span"], p["region"]) for p in c.phrases), meaning=_frozen(c.meaning))
             for im in images for c in im.captions]
    texts += [TextRecord(im.record.image_id, q.text, "question", answer=q.answer, category=q.category,
                         answers=(q.answer,) * HUMAN_ANSWERS) for im in images for q in im.questions]
    twins = {im.record.image_id: im.twin for im in images if im.twin is not None}
    return Corpus(MemoryFeatures([im.record for im in images]), texts, twins)


def write_split(folder: Path, split: str, images: list[SyntheticImage], seed: int = 0) -> None:
    """captions_<split>.json, vqa_{questions,annotations}_<split>.json and nlvr2_<split>.json (statements about
    pairs of this split's scenes, seeded by `seed`)."""
    coco_images = [{"id": int(im.record.image_id), "width": im.record.width, "height": im.record.height,
                    "file_name": f"{im.record.image_id}.png",
                    "semvlp_binding_twin": None if im.twin is None else int(im.twin)} for im in images]
    annotations = [{"image_id": int(im.record.image_id), "caption": c.text,
                    "semvlp": {"kind": c.kind, "phrases": c.phrases, "attribute_spans": c.attribute_spans,
                               "relation_spans": c.relation_spans, "hard_negatives": c.hard_negatives,
                               "meaning": c.meaning}}
                   for im in images for c in im.captions]
    write_coco_captions(folder / f"captions_{split}.json", coco_images, annotations)
    items = [{"image_id": int(im.record.image_id), "question": q.text, "answer": q.answer, "category": q.category}
             for im in images for q in im.questions]
    write_vqa(folder / f"vqa_questions_{split}.json", folder / f"vqa_annotations_{split}.json", items, HUMAN_ANSWERS)
    if len(images) >= 2:
        write_nlvr2(folder / f"nlvr2_{split}.json", paired_statements(split, [im.record for im in images], seed))


def write_synthetic(folder, counts: dict[str, int], seed: int = 0, feature_dim: int = HAND_FEATURE_DIM,
                    formats: tuple[str, ...] = ("tsv",), features: str = "hand") -> dict[str, list[SyntheticImage]]:
    """Writes every split's captions, questions and paired statements, and all images' features (of the kind
    `features` names) in each of `formats`."""
    unknown = [f for f in formats if f not in FEATURE_FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats: expected some of {list(FEATURE_FORMATS)}, got {list(formats)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    splits = {split: generate_split(split, n, seed, feature_dim, features=features) for split, n in counts.items()}
    for split, images in splits.items():
        write_split(folder, split, images, seed)
    records = [im.record for images in splits.values() for im in images]
    for fmt in formats:
        write_features(folder, fmt, records)
    return splits
