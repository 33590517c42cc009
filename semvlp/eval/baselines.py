"""What a model that ignores the image scores: the references the downstream numbers are read against."""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from ..data.answers import normalize_answer
from ..data.corpus import Corpus
from ..data.task_datasets import human_spellings, usual_spelling
from .task_eval import RETRIEVAL_CAPTION_KINDS, qa_metrics, retrieval_pool


def answer_prior(train: Corpus, test: Corpus) -> dict[str, float]:
    """The metrics of `evaluate_qa` on `test` when every question gets the most common training answer of its
    category (the best a model can do from the question's type alone), spelled as humans most often spell it
    (the official metric compares agreeing human answers unprocessed)."""
    asked = [t for t in train.texts if t.kind == "question"]
    per_category: dict = {}
    for t in asked:
        per_category.setdefault(t.category, Counter())[normalize_answer(t.answer)] += 1
    spellings = human_spellings(asked)
    overall = sum(per_category.values(), Counter()).most_common(1)[0][0]
    questions = [t for t in test.texts if t.kind == "question"]
    predictions = [usual_spelling(spellings, per_category[q.category].most_common(1)[0][0]
                                  if q.category in per_category else overall) for q in questions]
    return qa_metrics(predictions, [q.answers or (q.answer,) for q in questions], [q.category for q in questions])


def retrieval_chance(corpus: Corpus, num_images: int, ks: Sequence[int] = (1, 5, 10),
                     caption_kinds: Sequence[str] | None = RETRIEVAL_CAPTION_KINDS) -> dict[str, float]:
    """Expected recall@k of random scores over the pool `evaluate_retrieval` uses: k / images for a text; for an
    image with m of the T texts, the chance that one of them lands in the top k."""
    captions, pool = retrieval_pool(corpus, num_images, caption_kinds)
    texts_per_image = Counter(t.image_id for t in captions)
    total = len(captions)
    out = {}
    for k in ks:
        out[f"text_to_image/R@{k}"] = min(1.0, k / len(pool))
        misses = [math.comb(total - texts_per_image[i], k) / math.comb(total, k) if k <= total else 0.0 for i in pool]
        out[f"image_to_text/R@{k}"] = 1.0 - sum(misses) / len(pool)
    return out
