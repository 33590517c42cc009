"""Held-out relation-word accuracy: relation captions masked as training masks them, only the relation word
itself scored (not the "of" or the word after "above"); the printout shows it and the relation captions' ITM."""

from types import SimpleNamespace

import numpy as np
import torch

from semvlp.data.collate import Collator
from semvlp.data.dataset import AnswerVocab, PretrainingDataset
from semvlp.data.synthetic import generate_split, to_corpus
from semvlp.data.synthetic.language import RELATION_WORDS
from semvlp.data.tokenizer import WordPieceTokenizer
from semvlp.eval.pretraining import EVAL_SEED, evaluate, format_results


class _SomeWordsPredictor(torch.nn.Module):
    """Predicts a masked word right when it is one of `right_ids`, else token id 0."""

    def __init__(self, right_ids):
        super().__init__()
        self.right_ids = torch.tensor(right_ids)

    @property
    def module(self):
        return self

    def forward(self, batch, mode):
        known = torch.isin(batch.mlm_targets, self.right_ids)
        predicted = torch.where(known, batch.mlm_targets, torch.zeros_like(batch.mlm_targets))
        logits = torch.nn.functional.one_hot(predicted, batch.input_ids.max().item() + 1000).float()
        return SimpleNamespace(itm_logits=None, mlm_logits=logits, grounding_logits=None)


def test_relation_mlm_accuracy_scores_the_relation_words_only(group):
    corpus = to_corpus(generate_split("val", 40, seed=5))
    tokenizer = WordPieceTokenizer(max_length=64)
    answers = AnswerVocab.from_texts(corpus.texts, 8)
    collator = Collator(tokenizer.mask_id, tokenizer.first_word_id, tokenizer.vocab_size, box_dim=5)
    # Right on "left" and "below" and on every word masked beside a relation word.
    predictor = _SomeWordsPredictor([tokenizer.token_to_id(w) for w in ("left", "below", "of", "a", "an")])
    results = evaluate(predictor, {"val": corpus}, tokenizer, answers, collator, ["two"], 7,
                       group.rank, group.world_size, torch.float32, torch.device("cpu"))

    relations = PretrainingDataset(corpus, tokenizer, answers, seed=EVAL_SEED, purpose="relation_eval")
    words = [tokenizer.token_to_id(w) for w in RELATION_WORDS]
    scored = []
    for i in range(len(relations)):
        sample = relations[(0, i)]
        masked = sample.grounded_positions
        scored += [tokenizer.decode([sample.token_ids[p]]) for p in masked if sample.token_ids[p] in words]
        assert len(masked) == 2 and sample.token_ids[masked[1]] not in words
    assert len(scored) == len(relations) > 10
    expected = np.isin(scored, ["left", "below"]).mean()
    assert 0.1 < expected < 0.9  # scoring the words beside them (all right) would give more
    assert abs(results["val/two/relation_mlm_accuracy"] - expected) < 1e-9

def test_printout_has_relation_rows():
    results = {f"val/single/{m}": 0.5 for m in ("itm_accuracy", "itm_accuracy_relation", "itm_accuracy_count",
                                                 "attribute_mlm_accuracy", "relation_mlm_accuracy",
                                                 "grounding_accuracy")}
    results["val/single/relation_mlm_accuracy"] = 0.925
    table = format_results(results, {"val": 40}).splitlines()
    relation_rows = [line for line in table if "relation" in line]
    assert len(relation_rows) == 2 and "count" not in "".join(table)
    assert relation_rows[1].startswith("masked relation words") and relation_rows[1].endswith("92.5%")
    assert [line.split(",")[0] for line in table[1:]] == [
        "image-text matching", "image-text matching", "masked attribute words", "masked relation words",
        "phrase grounding"]
