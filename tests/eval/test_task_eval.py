"""Downstream evaluation through models: retrieval scored in batches equals pair-by-pair scoring, and the
QA / matching metrics are wired to the right questions, captions and hard negatives."""

from collections import Counter

import numpy as np
import pytest
import torch

from semvlp import SemVLPConfig
from semvlp.data.dataset import AnswerVocab
from semvlp.data.synthetic import generate_split, to_corpus
from semvlp.data.synthetic.language import GRANULARITY
from semvlp.data.task_datasets import Example, QuestionAnsweringDataset, collate
from semvlp.data.tokenizer import WordPieceTokenizer, train_vocab
from semvlp.eval import recall_at_k
from semvlp.eval.task_eval import evaluate_itm, evaluate_qa, evaluate_retrieval, matching_scores
from semvlp.model import SemVLPForImageTextMatching


@pytest.fixture(scope="module")
def corpus():
    return to_corpus(generate_split("test", 14, seed=3))


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    vocab = train_vocab([t.text for t in corpus.texts] + [n for t in corpus.texts for n in t.hard_negatives],
                        tmp_path_factory.mktemp("vocab"), vocab_size=150)
    return WordPieceTokenizer(vocab)


@pytest.fixture(scope="module")
def matching(tokenizer):
    config = SemVLPConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=64, cross_layers=[1], visual_feat_dim=64,
                          max_regions=8, num_region_labels=4, num_qa_labels=4, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0, initializer_range=0.3)
    torch.manual_seed(0)
    return SemVLPForImageTextMatching(config).eval()


@pytest.mark.parametrize("mode", ["single", "two"])
def test_batched_retrieval_equals_scoring_each_pair_alone(corpus, tokenizer, matching, mode):
    results = evaluate_retrieval(matching, corpus, tokenizer, mode, num_images=12, batch_size=37)
    captions = [t for t in corpus.texts if t.kind == "caption" and t.category in ("pair", "relation")]
    pool = sorted({t.image_id for t in captions}, key=int)[:12]
    captions = [t for t in captions if t.image_id in pool]
    ids = [e.ids for e in tokenizer.encode_batch([t.text for t in captions])]
    scores = torch.zeros(len(captions), len(pool))
    with torch.no_grad():
        for t, token_ids in enumerate(ids):
            for i, image_id in enumerate(pool):
                record = corpus.features[image_id]
                batch = collate([Example([token_ids], [record.features], [record.normalised_boxes()], np.array(0))], 5)
                scores[t, i] = matching_scores(matching(*batch.inputs(), mode=mode))[0]
    assert scores.std() > 0  # the model tells pairs apart, so the ranks below mean something
    expected = recall_at_k(scores, [pool.index(t.image_id) for t in captions])
    for key, value in expected.items():
        direction, k = key.split("/")
        assert results[f"{direction}/{k}"] == pytest.approx(value), key


def test_retrieval_pool_must_cover_the_largest_k(corpus, tokenizer, matching):
    with pytest.raises(ValueError, match="num_images: the pool has 5 images"):
        evaluate_retrieval(matching, corpus, tokenizer, "single", num_images=5)


class _Oracle(torch.nn.Module):
    """Matching logits from a lookup: a sample matches when its text is one of its image's true captions
    (or, inverted, when it is not)."""

    def __init__(self, config, corpus, tokenizer, inverted=False):
        super().__init__()
        self.config, self.inverted = config, inverted
        self.weight = torch.nn.Parameter(torch.zeros(1))
        captions = [t for t in corpus.texts if t.kind == "caption"]
        encoded = tokenizer.encode_batch([t.text for t in captions])
        self.true = {(tuple(e.ids.tolist()), corpus.features[t.image_id].features.tobytes())
                     for e, t in zip(encoded, captions)}

    def forward(self, input_ids, region_features, region_boxes, layout, mode="single"):
        text, regions = layout.text_cu_seqlens.tolist(), layout.region_cu_seqlens.tolist()
        out = []
        for b in range(layout.batch_size):
            key = (tuple(input_ids[text[b]:text[b + 1]].tolist()),
                   region_features[regions[b]:regions[b + 1]].numpy().tobytes())
            match = (key in self.true) != self.inverted
            out.append([0.0, 1.0] if match else [1.0, 0.0])
        return torch.tensor(out) + 0 * self.weight


def test_itm_and_hard_negatives_by_type(corpus, tokenizer, matching):
    oracle = evaluate_itm(_Oracle(matching.config, corpus, tokenizer), corpus, tokenizer, "single")
    assert oracle["accuracy"] == 1.0
    assert {k for k in oracle if k.startswith("hard/")} == {f"hard/{t}" for t in
                                                            ("colour", "binding", "relation", "count", "absence")}
    assert all(v == 1.0 for k, v in oracle.items())
    inverted = evaluate_itm(_Oracle(matching.config, corpus, tokenizer, inverted=True), corpus, tokenizer, "single")
    assert inverted["accuracy"] == 0.0 and all(v == 0.0 for k, v in inverted.items() if k.startswith("hard/"))


class _AlwaysYes(torch.nn.Module):
    def __init__(self, config, answers):
        super().__init__()
        self.config = config
        self.logits = torch.nn.Parameter(torch.tensor([1.0 if a == "yes" else 0.0 for a in answers]))

    def forward(self, input_ids, region_features, region_boxes, layout, mode="single"):
        return self.logits.expand(layout.batch_size, -1)


def test_qa_accuracy_per_type_and_granularity(corpus, tokenizer, matching):
    answers = AnswerVocab(["no", "yes", "red", "2"])
    dataset = QuestionAnsweringDataset(corpus, tokenizer, answers)
    results = evaluate_qa(_AlwaysYes(matching.config, answers.answers), dataset, "single")
    questions = dataset.questions
    yes = Counter(q.category for q in questions if q.answer == "yes")
    total = Counter(q.category for q in questions)
    assert results["accuracy"] == pytest.approx(sum(yes.values()) / len(questions))
    for category, n in total.items():
        assert results[f"type/{category}"] == pytest.approx(yes[category] / n)
    for level in ("fine", "high"):
        mine = [c for c in total if GRANULARITY[c] == level]
        assert results[f"granularity/{level}"] == pytest.approx(sum(yes[c] for c in mine) / sum(total[c] for c in mine))
