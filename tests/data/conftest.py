import pytest

from semvlp.data.dataset import AnswerVocab
from semvlp.data.synthetic import generate_split, to_corpus
from semvlp.data.tokenizer import WordPieceTokenizer


@pytest.fixture(scope="module")
def pretraining_corpus():
    """(corpus, tokenizer, answers) of 80 synthetic training scenes, for the pretraining dataset's tests."""
    corpus = to_corpus(generate_split("train", 80, seed=4))
    return corpus, WordPieceTokenizer(max_length=64), AnswerVocab.from_texts(corpus.texts, 64)
