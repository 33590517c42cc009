import pytest

from semvlp.data.tokenizer import WordPieceTokenizer, train_vocab


def test_default_vocab_is_bert_base_uncased_without_padding_or_truncation_at_128():
    tokenizer = WordPieceTokenizer()
    assert tokenizer.vocab_size == 30522
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.pad_id) == (101, 102, 103, 0)
    short, long = tokenizer.encode_batch(["A red circle", " ".join(["square"] * 200)])
    assert short.ids.tolist() == [101, 1037, 2417, 4418, 102]  # lower-cased, no padding
    assert len(long.ids) == 202
    assert short.offsets[2] == (2, 5)


def test_truncation_follows_max_length():
    tokenizer = WordPieceTokenizer(max_length=8)
    ids = tokenizer.encode_batch([" ".join(["star"] * 20)])[0].ids
    assert len(ids) == 8 and ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id


def test_trained_vocab_round_trips(tmp_path):
    sentences = ["a red circle left of a blue square", "how many stars are there?"] * 50
    vocab = train_vocab(sentences, tmp_path, vocab_size=120)
    tokenizer = WordPieceTokenizer(vocab)
    assert tokenizer.vocab_size <= 120
    ids = tokenizer.encode_batch(["a red circle"])[0].ids
    assert tokenizer.decode(ids) == "a red circle"
    assert tokenizer.unk_id not in ids.tolist()


def test_vocab_without_special_tokens_is_rejected(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[PAD\]'"):
        WordPieceTokenizer(tmp_path / "vocab.txt")
