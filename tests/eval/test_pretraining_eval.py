"""Held-out evaluation: the ITM accuracy per kind of caption counts each kind's own samples; grounding accuracy
counts the phrase words of the matching captions."""

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import torch

from semvlp.data.collate import Collator
from semvlp.data.dataset import AnswerVocab, PretrainingDataset
from semvlp.data.synthetic import generate_split, to_corpus
from semvlp.data.tokenizer import WordPieceTokenizer
from semvlp.eval.pretraining import EVAL_SEED, evaluate, format_results


class _EvenLengthMatcher(torch.nn.Module):
    """Calls a pair a match when its text has an even number of tokens: right for some kinds, wrong for others;
    grounds every phrase word in its image's first region."""

    @property
    def module(self):
        return self

    def forward(self, batch, mode):
        even = torch.tensor([n % 2 == 0 for n in batch.layout.text_lengths()])
        first_region = torch.zeros(batch.grounding_targets.numel(), batch.layout.max_regions)
        first_region[:, 0] = 1.0
        return SimpleNamespace(itm_logits=torch.stack([(~even).float(), even.float()], dim=1), mlm_logits=None,
                               grounding_logits=first_region)


def test_itm_accuracy_is_reported_for_each_kind_of_caption(group):
    corpus = to_corpus(generate_split("val", 40, seed=3))
    tokenizer = WordPieceTokenizer(max_length=64)
    answers = AnswerVocab.from_texts(corpus.texts, 8)
    collator = Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, box_dim=5)
    results = evaluate(_EvenLengthMatcher(), {"val": corpus}, tokenizer, answers, collator, ["single"], 16,
                       group.rank, group.world_size, torch.float32, torch.device("cpu"))

    pairs = PretrainingDataset(corpus, tokenizer, answers, seed=EVAL_SEED, purpose="itm_eval")
    counts = defaultdict(lambda: [0, 0])
    first_region_named, phrase_words = 0, 0
    for i in range(len(pairs)):
        sample = pairs[(0, i)]
        first_region_named += len(np.unique(sample.phrase_positions[sample.phrase_regions == 0]))
        phrase_words += len(np.unique(sample.phrase_positions))
        correct = int(len(sample.token_ids) % 2 == 0) == sample.itm_label
        for key in (pairs.texts[i // 2].category, None):
            counts[key][0] += correct
            counts[key][1] += 1
    assert set(counts) - {None} == {"object", "pair", "relation", "count", "absence"}
    for kind, (correct, total) in counts.items():
        key = "val/single/itm_accuracy" + (f"_{kind}" if kind else "")
        assert abs(results[key] - correct / total) < 1e-9, key
    assert len({round(results[f"val/single/itm_accuracy_{k}"], 6) for k in counts if k}) > 1
    assert phrase_words and abs(results["val/single/grounding_accuracy"] - first_region_named / phrase_words) < 1e-9
    table = format_results(results, {"val": 40})
    assert "image-text matching" in table and "object" not in table  # the table keeps the headline rows
    assert table.index("image-text matching") < table.index("phrase grounding")


class _EvenOffsetPredictor(torch.nn.Module):
    """Predicts a masked word right when its position within its caption is even, else token id 0 (never a
    colour word); no ITM or grounding output."""

    @property
    def module(self):
        return self

    def forward(self, batch, mode):
        starts = batch.layout.text_cu_seqlens[:-1].long()
        sample = torch.searchsorted(batch.layout.text_cu_seqlens[1:].long(), batch.mlm_positions, right=True)
        even = (batch.mlm_positions - starts[sample]) % 2 == 0
        predicted = torch.where(even, batch.mlm_targets, torch.zeros_like(batch.mlm_targets))
        logits = torch.nn.functional.one_hot(predicted, batch.input_ids.max().item() + 1000).float()
        return SimpleNamespace(itm_logits=None, mlm_logits=logits, grounding_logits=None)


def test_attribute_mlm_accuracy_counts_the_masked_colour_words(group):
    corpus = to_corpus(generate_split("val", 40, seed=5))
    tokenizer = WordPieceTokenizer(max_length=64)
    answers = AnswerVocab.from_texts(corpus.texts, 8)
    collator = Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, box_dim=5)
    results = evaluate(_EvenOffsetPredictor(), {"val": corpus}, tokenizer, answers, collator, ["two"], 7,
                       group.rank, group.world_size, torch.float32, torch.device("cpu"))

    attributes = PretrainingDataset(corpus, tokenizer, answers, seed=EVAL_SEED, purpose="attribute_eval")
    samples = [attributes[(0, i)] for i in range(len(attributes))]
    colour_words = np.concatenate([s.grounded_positions for s in samples])
    targets = np.concatenate([s.token_ids[s.grounded_positions] for s in samples])
    assert colour_words.size > 0 and (targets != 0).all()  # id 0, the predictor's wrong answer, is never right
    expected = (colour_words % 2 == 0).mean()
    assert 0.05 < expected < 0.95  # a rate that a miscount could not hit by chance
    assert abs(results["val/two/attribute_mlm_accuracy"] - expected) < 1e-9
