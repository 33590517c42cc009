"""The fine-tuning answer vocabulary: processed answers, each spelled as the human answers most often spell it, so
that a prediction is credited by the official rule (agreeing humans are compared unprocessed); questions read
without annotations get no target."""

import numpy as np
import pytest

from semvlp.data.corpus import Corpus, MemoryFeatures
from semvlp.data.dataset import AnswerVocab
from semvlp.data.records import ImageRecord, TextRecord
from semvlp.data.task_datasets import QuestionAnsweringDataset, answer_vocab
from semvlp.data.tokenizer import WordPieceTokenizer, train_vocab
from semvlp.eval import vqa_score

FEATURES = MemoryFeatures([ImageRecord("1", 10, 10, np.zeros((1, 4), np.float32), np.zeros((1, 3), np.float32),
                                       np.zeros(1, np.int64), np.zeros(1, np.int64))])


def _question(answer, humans=None):
    return TextRecord("1", "how many?", "question", answer=answer, answers=tuple(humans or ()))


def test_each_answer_is_spelled_as_the_humans_spell_it_most():
    corpus = Corpus(FEATURES, [_question("two", ["two"] * 10), _question("two", ["two"] * 10),
                               _question("2", ["2"] * 6 + ["two"] * 4), _question("Yes", ["Yes", "yes", "yes"])])
    vocab = answer_vocab(corpus, 10)
    # "2" counts 3 questions; its human spellings: "two" 24 times, "2" 6 times.
    assert vocab.answers == ["two", "yes"]
    assert vqa_score(vocab.answers[0], ["two"] * 10) == 1.0


def test_questions_without_answers_get_no_target_and_no_vocabulary(tmp_path):
    corpus = Corpus(FEATURES, [_question(None), _question(None)])
    with pytest.raises(ValueError, match="corpus: expected questions with answers"):
        answer_vocab(corpus, 10)
    tokenizer = WordPieceTokenizer(train_vocab(["how many?"], tmp_path, vocab_size=40))
    dataset = QuestionAnsweringDataset(corpus, tokenizer, AnswerVocab(["2", "yes"]))
    assert dataset.human_answers(0) == () and not dataset.targets.any()
