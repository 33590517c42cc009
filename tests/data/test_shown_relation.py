"""Relation captions in training: their own mask rate, and the MLM targets their ITM samples carry on the relation
words (the relation the image shows), for the caption itself and for its flipped relation, never otherwise."""

import numpy as np
import pytest

from semvlp.data.collate import Collator
from semvlp.data.dataset import PretrainingDataset, _flipped_relations
from semvlp.data.synthetic.language import FLIP, RELATION_WORDS


def _relation_captions(dataset):
    return [i for i, t in enumerate(dataset.texts) if t.kind == "caption" and t.relation_spans]


def test_flips_differ_from_the_caption_only_in_its_relation_words():
    caption, relations = [1, 10, 11, 12, 13, 2], np.array([2, 3])
    negatives = [[1, 10, 21, 12, 13, 2],      # a flipped relation: one relation word changed
                 [1, 10, 11, 12, 31, 2],      # a changed colour: not a flip
                 [1, 10, 21, 12, 31, 2],      # a relation and a colour changed: not a flip
                 [1, 10, 21, 2],              # another length
                 [1, 10, 11, 22, 13, 2]]      # the relation's second word changed
    positions, ids, flips = _flipped_relations(caption, relations, negatives)
    assert flips == {0, 4} and positions.tolist() == [2, 3] and ids.tolist() == [11, 12]
    assert _flipped_relations(caption, np.zeros(0, np.int64), negatives)[2] == frozenset()


def test_relation_itm_samples_name_the_relation_the_image_shows(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers, seed=5)
    shown = {"own": 0, "flipped": 0, "other": 0}
    for epoch in range(4):
        for i in _relation_captions(dataset):
            sample = dataset[(epoch, i)]
            caption = dataset.texts[i].text
            relation = next(r for r in FLIP if f" {r} " in caption)
            if sample.itm_label == 1:
                kind = "own"
            elif tokenizer.decode(sample.token_ids.tolist()) == caption.replace(relation, FLIP[relation]):
                kind = "flipped"
            else:
                kind = "other"  # another image's caption
            shown[kind] += 1
            if kind == "other":
                assert len(sample.shown_relation_positions) == len(sample.shown_relation_ids) == 0
                continue
            # The relation word (never its "of"), and the caption's: the relation the image shows.
            assert tokenizer.decode(sample.shown_relation_ids.tolist()) == relation.split()[0]
            assert relation.split()[0] in RELATION_WORDS
            words = tokenizer.decode(sample.token_ids[sample.shown_relation_positions].tolist())
            assert words == (relation if kind == "own" else FLIP[relation]).split()[0]
    assert min(shown.values()) > 10, shown


def test_other_captions_questions_and_evaluation_carry_no_relation_targets(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers, seed=5, attribute_mask_rate=0.5)
    relations = set(_relation_captions(dataset))
    for i in range(len(dataset)):
        sample = dataset[(0, i)]
        if i not in relations or sample.itm_label == -100:
            assert len(sample.shown_relation_positions) == 0, dataset.texts[i].text
    for purpose in ("itm_eval", "relation_eval"):
        evaluation = PretrainingDataset(corpus, tokenizer, answers, purpose=purpose)
        assert all(len(evaluation[(0, i)].shown_relation_positions) == 0 for i in range(len(evaluation)))


def test_relation_captions_take_their_own_mask_rate(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers, seed=6, attribute_mask_rate=1.0, relation_mask_rate=0.0)
    grounded = [i for i, t in enumerate(dataset.texts) if t.kind == "caption" and len(dataset.grounded_positions[i])]
    relations = set(_relation_captions(dataset))
    assert relations and set(grounded) - relations
    for i in grounded:
        masking = dataset[(0, i)].masking
        assert masking == ("random" if i in relations else "random_and_grounded")
    default = PretrainingDataset(corpus, tokenizer, answers, attribute_mask_rate=1.0)
    assert default.relation_mask_rate == 1.0
    assert all(default[(0, i)].masking == "random_and_grounded" for i in grounded)


@pytest.mark.parametrize("rate", [-0.1, 1.5, True, "0.4"])
def test_relation_mask_rate_must_be_a_rate(pretraining_corpus, rate):
    corpus, tokenizer, answers = pretraining_corpus
    with pytest.raises(ValueError, match=r"relation_mask_rate: expected a rate in \[0, 1\]"):
        PretrainingDataset(corpus, tokenizer, answers, relation_mask_rate=rate)


def test_the_collator_adds_the_targets_once_whatever_the_itm_label(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers, seed=5)
    collate = Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, box_dim=5,
                       word_mask_rate=0.5)
    seen = set()
    for epoch in range(6):
        for i in _relation_captions(dataset):
            sample = dataset[(epoch, i)]
            if not len(sample.shown_relation_positions):
                continue
            _, positions, targets = collate._mask_words(sample, np.random.default_rng(list(sample.mask_seed)))
            assert len(set(positions.tolist())) == len(positions)
            expected = dict(zip(sample.shown_relation_positions.tolist(), sample.shown_relation_ids.tolist()))
            found = {p: t for p, t in zip(positions.tolist(), targets.tolist()) if p in expected}
            assert found == expected
            if sample.itm_label == 0:
                assert positions.tolist() == sample.shown_relation_positions.tolist()  # no other target
            seen.add((sample.itm_label, len(positions) > len(expected)))
    assert {(0, False), (1, True)} <= seen
    batch = collate([dataset[(0, i)] for i in _relation_captions(dataset)[:8]])
    assert len(batch.mlm_positions) == len(batch.mlm_targets)
