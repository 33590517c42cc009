"""Token ids and character offsets of a dataset's texts, computed once and cached beside its data.

The cache is `tokens-<key>.npz` in the corpus's cache folder (its data folder; when that cannot be written,
~/.cache/semvlp/tokens/, with a warning), where the key is a SHA-256 of the vocab file, the tokenizer's truncation
length (as it applies to these texts) and every text, so a change of any of them tokenises again. It holds plain
arrays (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from .tokenizer import Encoded, WordPieceTokenizer

logger = logging.getLogger(__name__)


def _truncation_length(tokenizer: WordPieceTokenizer, texts: list[str]) -> int:
    """How many tokens these texts are cut to, measured on a text of more words than any of them has characters
    (a limit above that cuts none of them, so it encodes them as no limit does)."""
    return len(tokenizer.encode_batch(["a " * (max(map(len, texts)) + 3)])[0].ids)


def _key(tokenizer: WordPieceTokenizer, texts: list[str]) -> str:
    digest = hashlib.sha256(Path(tokenizer.vocab_path).read_bytes())
    digest.update(str(_truncation_length(tokenizer, texts)).encode())
    digest.update(json.dumps(texts).encode("utf-8"))
    return digest.hexdigest()[:32]


def _locations(cache_dir: Path, key: str) -> tuple[Path, Path]:
    name = f"tokens-{key}.npz"
    return cache_dir / name, Path.home() / ".cache" / "semvlp" / "tokens" / name


def _unpack(arrays) -> list[Encoded]:
    ends = np.cumsum(arrays["lengths"])
    starts = ends - arrays["lengths"]
    ids, offsets = arrays["ids"].astype(np.int64), arrays["offsets"]
    return [Encoded(ids[s:e], [tuple(o) for o in offsets[s:e].tolist()]) for s, e in zip(starts, ends)]


def _save(path: Path, encoded: list[Encoded]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(temporary, lengths=np.array([len(e.ids) for e in encoded], np.int64),
                 ids=np.concatenate([e.ids for e in encoded]).astype(np.int64),
                 offsets=np.array([o for e in encoded for o in e.offsets], np.int64).reshape(-1, 2))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def encode_cached(tokenizer: WordPieceTokenizer, texts: list[str], cache_dir) -> list[Encoded]:
    """`tokenizer.encode_batch(texts)`, read from the cache when it holds them (None: no cache)."""
    if not texts:
        return []
    if cache_dir is None:
        return tokenizer.encode_batch(texts)
    beside, in_home = _locations(Path(cache_dir), _key(tokenizer, texts))
    for path in (beside, in_home):
        if path.is_file():
            with np.load(path, allow_pickle=False) as arrays:
                return _unpack(arrays)
    encoded = tokenizer.encode_batch(texts)
    for path in (beside, in_home):
        try:
            _save(path, encoded)
            return encoded
        except OSError as err:
            logger.warning("cannot cache the token ids at %s (%s)%s", path, err,
                           f"; caching them under {in_home.parent}" if path == beside else "")
    return encoded
