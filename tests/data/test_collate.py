import numpy as np
import pytest
import torch

from semvlp.data.collate import Collator
from semvlp.data.dataset import AnswerVocab, PretrainingDataset, Sample
from semvlp.data.synthetic import generate_split, to_corpus
from semvlp.data.synthetic.scenes import COLOURS
from semvlp.data.tokenizer import WordPieceTokenizer
from semvlp.model import SemVLPConfig, SemVLPForPretraining
from semvlp.model.inputs import PackedLayout


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(max_length=64)


@pytest.fixture(scope="module")
def corpus():
    return to_corpus(generate_split("train", 60, seed=9))


def _collator(tokenizer, **kw):
    return Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, box_dim=5, **kw)


def _sample(n_words, n_regions, itm=1, seed=0, masking="random"):
    rng = np.random.default_rng(seed)
    ids = np.concatenate([[101], rng.integers(1000, 2000, n_words), [102]]).astype(np.int64)
    return Sample(ids, np.array([1], np.int64), rng.random((n_regions, 8)).astype(np.float32),
                  np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (n_regions, 1)),
                  np.arange(n_regions, dtype=np.int64), itm, -100, (seed,), masking)


def test_word_masking_is_15_percent_80_10_10_with_targets_at_masked_positions(tokenizer):
    samples = [_sample(30, 4, seed=s) for s in range(400)]
    batch = _collator(tokenizer)(samples)
    original = np.concatenate([s.token_ids for s in samples])
    positions = batch.mlm_positions.numpy()
    n_words = 400 * 30
    assert abs(len(positions) / n_words - 0.15) < 0.015
    assert np.array_equal(batch.mlm_targets.numpy(), original[positions])
    replaced = batch.input_ids.numpy()[positions]
    assert abs((replaced == tokenizer.mask_id).mean() - 0.8) < 0.03
    kept = (replaced == original[positions]).mean()
    assert abs(kept - 0.1) < 0.03
    unmasked = np.setdiff1d(np.arange(len(original)), positions)
    assert np.array_equal(batch.input_ids.numpy()[unmasked], original[unmasked])
    cls = batch.layout.text_cu_seqlens[:-1].long().numpy()
    assert not np.isin(cls, positions).any() and not np.isin(cls + 31, positions).any()  # [CLS], [SEP] never


def test_region_masking_zeroes_15_percent_and_keeps_their_targets(tokenizer):
    samples = [_sample(5, 10, seed=s) for s in range(300)]
    batch = _collator(tokenizer)(samples)
    original = np.concatenate([s.features for s in samples])
    labels = np.concatenate([s.object_labels for s in samples])
    positions = batch.mrm_positions.numpy()
    assert abs(len(positions) / len(original) - 0.15) < 0.02
    assert (batch.region_features.numpy()[positions] == 0).all()
    assert np.array_equal(batch.mrm_feature_targets.numpy(), original[positions])
    assert np.array_equal(batch.mrm_label_targets.numpy(), labels[positions])
    rest = np.setdiff1d(np.arange(len(original)), positions)
    assert np.array_equal(batch.region_features.numpy()[rest], original[rest])


def test_mismatched_pairs_are_masked_but_have_no_mlm_targets(tokenizer):
    batch = _collator(tokenizer)([_sample(40, 3, itm=0, seed=s) for s in range(20)])
    assert (batch.input_ids == tokenizer.mask_id).any()
    assert batch.mlm_positions.numel() == 0
    assert (batch.itm_labels == 0).all()


def test_attribute_masking_masks_exactly_the_colour_words(tokenizer, corpus):
    dataset = PretrainingDataset(corpus, tokenizer, AnswerVocab([]), purpose="attribute_eval")
    samples = [dataset[(0, i)] for i in range(len(dataset))]
    batch = _collator(tokenizer)(samples)
    colours = {tokenizer.token_to_id(c) for c in COLOURS}
    assert set(batch.mlm_targets.tolist()) <= colours
    assert batch.mlm_positions.numel() == sum(len(s.grounded_positions) for s in samples) > 0
    assert (batch.input_ids[batch.mlm_positions] == tokenizer.mask_id).all()
    assert (batch.input_ids == tokenizer.mask_id).sum() == batch.mlm_positions.numel()
    assert batch.mrm_positions.numel() == 0


def test_random_and_grounded_masking_adds_every_grounded_word_to_the_random_masks(tokenizer):
    samples = [_sample(12, 3, itm=-100, seed=s, masking="random_and_grounded") for s in range(400)]
    plain = _collator(tokenizer)([_sample(12, 3, itm=-100, seed=s) for s in range(400)])
    batch = _collator(tokenizer)(samples)
    starts = batch.layout.text_cu_seqlens[:-1].long()
    attribute = set((starts + 1).tolist())  # each sample tags token 1 as its colour word
    assert attribute <= set(batch.mlm_positions.tolist())
    assert (batch.input_ids[starts + 1] == tokenizer.mask_id).all()  # always [MASK], never a random word
    others = len(batch.mlm_positions) - 400
    assert abs(others / (400 * 11) - 0.15) < 0.03  # the other 11 words keep their 15% random masking
    assert len(plain.mlm_positions) < len(batch.mlm_positions)
    assert batch.mrm_positions.numel() > 0 and (batch.itm_labels == -100).all()


def test_phrase_grounding_is_packed_with_its_sample_and_region(tokenizer):
    samples = [_sample(5, 3, seed=0), _sample(7, 2, seed=1), _sample(4, 4, seed=2)]
    samples[0].phrase_positions, samples[0].phrase_regions = np.array([1, 2]), np.array([2, 0])
    samples[2].phrase_positions, samples[2].phrase_regions = np.array([3]), np.array([3])
    batch = _collator(tokenizer)(samples)
    assert batch.grounding_positions.tolist() == [1, 2, 7 + 9 + 3]
    assert batch.grounding_samples.tolist() == [0, 0, 2]
    assert batch.grounding_targets.tolist() == [2, 0, 3]


def test_layout_matches_the_samples_and_masking_is_seeded(tokenizer):
    samples = [_sample(n, r, seed=n) for n, r in [(1, 1), (7, 3), (12, 6), (3, 2)]]
    a, b = _collator(tokenizer)(samples), _collator(tokenizer)(samples)
    expected = PackedLayout.from_lengths([3, 9, 14, 5], [1, 3, 6, 2])
    assert torch.equal(a.layout.joint_cu_seqlens, expected.joint_cu_seqlens)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.mrm_positions, b.mrm_positions)
    assert a.region_boxes.shape == (12, 5)


def test_a_collated_synthetic_batch_trains_in_both_modes(tokenizer, corpus):
    config = SemVLPConfig.load("configs/model/tiny.json")
    answers = AnswerVocab.from_texts(corpus.texts, config.num_qa_labels)
    dataset = PretrainingDataset(corpus, tokenizer, answers)
    batch = _collator(tokenizer)([dataset[(0, i)] for i in range(0, len(dataset), 7)])
    assert (batch.qa_labels >= 0).any() and (batch.itm_labels == 0).any() and (batch.itm_labels == 1).any()
    model = SemVLPForPretraining(config)
    for mode in ("single", "two"):
        out = model(batch, mode=mode)
        assert torch.isfinite(out.loss)
        assert set(out.losses) == {"mlm", "mrm_feat", "mrm_label", "itm", "qa", "grounding", "region_position"}
