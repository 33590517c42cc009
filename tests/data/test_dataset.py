import dataclasses

import numpy as np
import pytest

from semvlp.data.corpus import Corpus
from semvlp.data.dataset import PretrainingDataset
from semvlp.data.synthetic.language import holds
from semvlp.data.synthetic.scenes import COLOURS, SHAPES
from semvlp.train.run_data import MicroBatchSampler


def test_half_of_the_captions_are_mismatched_and_those_are_false_for_the_image(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers, seed=1)
    texts = {tuple(ids.tolist()): t for ids, t in zip(dataset.token_ids, dataset.texts)}
    captions = [i for i, t in enumerate(dataset.texts) if t.kind == "caption"]
    labels, hard, checked = [], 0, 0
    for i in captions:
        sample = dataset[(0, i)]
        labels.append(sample.itm_label)
        if sample.itm_label == 0:
            other = texts.get(tuple(sample.token_ids.tolist()))
            if other is None:
                hard += 1  # a hard negative: not any image's own caption
                continue
            record = corpus.features[dataset.texts[i].image_id]
            colours = [list(COLOURS)[a] for a in record.attr_ids]
            shapes = [SHAPES[o] for o in record.object_ids]
            assert not holds(other.meaning, colours, shapes, record.boxes)
            checked += 1
    assert abs(np.mean(labels) - 0.5) < 0.06
    assert hard > 0 and checked > 0


def test_attribute_samples_leave_itm_balanced_for_every_kind_of_caption(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers, seed=2, attribute_mask_rate=0.8)
    captions = [i for i, t in enumerate(dataset.texts) if t.kind == "caption"]
    by_kind = {True: [], False: []}  # has grounded words (colour or relation words) or not
    for epoch in range(8):
        for i in captions:
            sample = dataset[(epoch, i)]
            tagged = len(dataset.grounded_positions[i]) > 0
            by_kind[tagged].append(sample.itm_label)
            if sample.masking == "random_and_grounded":
                assert tagged and sample.itm_label == -100
                assert np.array_equal(sample.token_ids, dataset.token_ids[i])
                assert np.array_equal(sample.grounded_positions, dataset.grounded_positions[i])
    tagged = np.array(by_kind[True])
    assert abs((tagged == -100).mean() - 0.8) < 0.05
    for labels in (tagged[tagged != -100], np.array(by_kind[False])):
        assert abs(labels.mean() - 0.5) < 0.08  # as many matches as mismatches
    with pytest.raises(ValueError, match="attribute_mask_rate"):
        PretrainingDataset(corpus, tokenizer, answers, attribute_mask_rate=1.5)


def test_attribute_samples_of_relation_captions_mask_the_relation_words(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers, seed=2, attribute_mask_rate=1.0)
    relations = [i for i, t in enumerate(dataset.texts) if t.kind == "caption" and t.category == "relation"]
    assert relations
    for i in relations:
        words = tokenizer.decode(dataset.token_ids[i][dataset.grounded_positions[i]].tolist())
        relation = next(r for r in ("left of", "right of", "above", "below") if f" {r} " in dataset.texts[i].text)
        assert relation in words
        sample = dataset[(0, i)]
        assert sample.masking == "random_and_grounded"
        assert np.array_equal(sample.grounded_positions, dataset.grounded_positions[i])
    evaluation = PretrainingDataset(corpus, tokenizer, answers, purpose="attribute_eval")
    for i, t in enumerate(evaluation.texts):
        sample = evaluation[(0, i)]
        assert np.array_equal(sample.grounded_positions, evaluation.attribute_positions[i])  # colour words only


def test_own_captions_ground_each_phrase_word_in_the_region_it_names(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers, seed=3, attribute_mask_rate=0.5)
    grounded = counted = 0
    for i, text in enumerate(dataset.texts):
        sample = dataset[(0, i)]
        record = corpus.features[text.image_id]
        if text.kind == "caption" and text.category == "count" and sample.itm_label != 0:
            # The shape word names every region of its shape, none when the count is zero.
            shape = next(s for s in SHAPES if f" {s}" in text.text)
            of_shape = [r for r, o in enumerate(record.object_ids) if SHAPES[o] == shape]
            assert sorted(sample.phrase_regions.tolist()) == of_shape
            words = {tokenizer.decode([dataset.token_ids[i][p]]) for p in sample.phrase_positions}
            assert words <= {shape, shape + "s"}
            counted += len(of_shape) > 1
            continue
        if sample.itm_label == 0 or text.kind == "question" or text.category == "absence":
            assert len(sample.phrase_positions) == len(sample.phrase_regions) == 0
            continue
        assert len(sample.phrase_positions) and len(sample.phrase_positions) == len(sample.phrase_regions)
        for region in np.unique(sample.phrase_regions):
            words = tokenizer.decode(dataset.token_ids[i][sample.phrase_positions[sample.phrase_regions == region]]
                                     .tolist())
            assert words.split()[-2:] == [list(COLOURS)[record.attr_ids[region]], SHAPES[record.object_ids[region]]]
        grounded += 1
    assert grounded > 50 and counted > 5


def test_a_phrase_naming_a_region_the_image_lacks_is_an_error(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    text = next(t for t in corpus.texts if t.phrases and t.attribute_spans)
    broken = dataclasses.replace(text, phrases=((*text.phrases[0][:2], 99),))
    # Refused when the dataset is built, before any sample is drawn.
    with pytest.raises(ValueError, match=rf"caption {broken.text!r} names region 99 of image '{text.image_id}'"):
        PretrainingDataset(Corpus(corpus.features, [broken]), tokenizer, answers, attribute_mask_rate=1.0)


def test_questions_keep_their_image_and_carry_their_answer(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers)
    for i, text in enumerate(dataset.texts):
        if text.kind == "question":
            sample = dataset[(0, i)]
            assert sample.itm_label == -100
            assert answers.answers[sample.qa_label] == text.answer


def test_itm_eval_pairs_each_caption_with_itself_and_a_mismatch(pretraining_corpus):
    corpus, tokenizer, answers = pretraining_corpus
    dataset = PretrainingDataset(corpus, tokenizer, answers, purpose="itm_eval")
    assert len(dataset) == 2 * sum(t.kind == "caption" for t in corpus.texts)
    assert [dataset[(0, i)].itm_label for i in range(6)] == [1, 0, 1, 0, 1, 0]
    assert all(dataset[(0, i)].masking == "none" for i in range(6))


def _keys(sampler):
    return [key for micro in sampler for key in micro]


def test_one_process_with_accumulation_reads_what_two_ranks_read():
    one = list(MicroBatchSampler(100, micro=4, accumulation=2, world=1, rank=0, seed=3, start_step=0, max_steps=30))
    ranks = [list(MicroBatchSampler(100, 4, 1, 2, r, 3, 0, 30)) for r in range(2)]
    for step in range(30):
        assert one[2 * step] == ranks[0][step] and one[2 * step + 1] == ranks[1][step]
    epoch0 = [i for e, i in _keys(MicroBatchSampler(100, 4, 2, 1, 0, 3, 0, 12)) if e == 0]
    assert len(epoch0) == len(set(epoch0)) == 96  # 12 steps of 8 cover an epoch once, the rest is dropped


def test_a_resumed_sampler_continues_the_same_order():
    full = list(MicroBatchSampler(50, 3, 2, 1, 0, 7, 0, 20))
    resumed = list(MicroBatchSampler(50, 3, 2, 1, 0, 7, 13, 20))
    assert resumed == full[26:]


def test_too_little_data_for_one_global_batch_is_an_error():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        MicroBatchSampler(10, 4, 2, 2, 0, 0, 0, 5)
