"""The relation-word evaluation masks every relation as two tokens, whatever its axis."""

from semvlp.data.dataset import AnswerVocab, PretrainingDataset
from semvlp.data.synthetic import generate_split, to_corpus
from semvlp.data.synthetic.language import RELATION_WORDS
from semvlp.data.tokenizer import WordPieceTokenizer


def _setup(purpose, **kwargs):
    corpus = to_corpus(generate_split("train", 60, seed=7))
    tokenizer = WordPieceTokenizer(max_length=64)
    answers = AnswerVocab.from_texts(corpus.texts, 8)
    return PretrainingDataset(corpus, tokenizer, answers, seed=0, purpose=purpose, **kwargs), tokenizer


def test_every_relation_is_masked_as_two_tokens_starting_at_its_word():
    relations, tokenizer = _setup("relation_eval")
    words = {tokenizer.token_to_id(w) for w in RELATION_WORDS}
    axes = set()
    for i in range(len(relations)):
        sample = relations[(0, i)]
        masked = sample.grounded_positions
        assert len(masked) == 2 and masked[1] == masked[0] + 1, relations.texts[i].text
        assert sample.token_ids[masked[0]] in words and masked[1] < len(sample.token_ids) - 1  # never [SEP]
        axes.add(tokenizer.decode([sample.token_ids[masked[0]]]) in ("left", "right"))
    assert axes == {True, False}  # both axes occur, each masked as two tokens
