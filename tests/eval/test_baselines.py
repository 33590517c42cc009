"""The no-image references: the answer prior per question category, and the recall of random scores."""

import numpy as np
import pytest
import torch

from semvlp.data.corpus import Corpus, MemoryFeatures
from semvlp.data.records import ImageRecord, TextRecord
from semvlp.eval import recall_at_k
from semvlp.eval.baselines import answer_prior, retrieval_chance
from semvlp.eval.task_eval import retrieval_pool


def _image(image_id):
    return ImageRecord(image_id, 10, 10, np.zeros((1, 4), np.float32), np.zeros((1, 3), np.float32),
                       np.zeros(1, np.int64), np.zeros(1, np.int64))


def _question(image_id, answer, category):
    return TextRecord(image_id, "q?", "question", answer=answer, category=category, answers=(answer,) * 10)


def test_answer_prior_answers_each_category_with_its_most_common_training_answer():
    features = MemoryFeatures([_image("1")])
    train = Corpus(features, [_question("1", a, c) for a, c in [("yes", "existence"), ("yes", "existence"),
                                                               ("no", "existence"), ("two", "count"),
                                                               ("three", "count"), ("two", "count")]])
    test = Corpus(features, [_question("1", a, c) for a, c in [("no", "existence"), ("yes", "existence"),
                                                              ("two", "count"), ("four", "count"),
                                                              ("red", "attribute")]])
    result = answer_prior(train, test)
    # existence -> "yes" (1 of 2), count -> "two" as the humans spell it (1 of 2), attribute unseen -> the overall
    # "yes" (0 of 1).
    assert result["accuracy"] == pytest.approx(2 / 5)
    assert result["type/existence"] == 0.5 and result["type/count"] == 0.5 and result["type/attribute"] == 0.0
    # Ten humans agreeing on "2" are compared unprocessed: the prior's "two" does not match them.
    digits = Corpus(features, [_question("1", "2", "count")])
    assert answer_prior(train, digits)["accuracy"] == 0.0
    assert result["granularity/fine"] == pytest.approx(1 / 3) and result["granularity/high"] == 0.5


def test_retrieval_chance_matches_random_scores():
    texts = [TextRecord(str(i), f"caption {k}", "caption", category="pair")
             for i in range(12) for k in range(1 + i % 3)]
    corpus = Corpus(MemoryFeatures([_image(str(i)) for i in range(12)]), texts)
    captions, pool = retrieval_pool(corpus, 10)
    target = [pool.index(t.image_id) for t in captions]
    g = torch.Generator().manual_seed(0)
    trials = [recall_at_k(torch.rand(len(captions), len(pool), generator=g), target) for _ in range(3000)]
    expected = retrieval_chance(corpus, 10)
    for key, value in expected.items():
        assert np.mean([t[key] for t in trials]) == pytest.approx(value, abs=0.01), key
