"""Samples for pretraining and evaluation: a text paired with an image's regions, labels, and a masking seed.

Every random choice of a sample (negative pairing here, masking in the collate function) is drawn from a
generator seeded with (seed, epoch, index), so a sample is a pure function of its position in the run: a
resumed run sees the same data, whatever the number of ranks or DataLoader workers.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .corpus import Corpus
from .records import TextRecord
from .synthetic.language import holds
from .synthetic.scenes import COLOURS, SHAPES
from .token_cache import encode_cached
from .tokenizer import WordPieceTokenizer

NEGATIVE_RATE = 0.5       # share of captions paired with a text that does not match their image
HARD_NEGATIVE_RATE = 0.5  # share of those negatives that are hard negatives when the caption has some
# "relation_eval" masks each relation as this many tokens ("left of"; "above" and the word after it), so that the
# number of [MASK]s does not tell a horizontal relation from a vertical one.
RELATION_MASK_TOKENS = 2
_NAMES = (tuple(COLOURS), SHAPES)
_NO_POSITIONS = np.zeros(0, np.int64)
PURPOSES = ("train", "itm_eval", "attribute_eval", "relation_eval")


@dataclass
class Sample:
    token_ids: np.ndarray            # (n,) int64, [CLS] ... [SEP]
    grounded_positions: np.ndarray   # (k,) int64 token positions of the grounded words the masking names
    features: np.ndarray             # (r, feature_dim) float32
    boxes: np.ndarray                # (r, 4) float32 normalised xyxy
    object_labels: np.ndarray        # (r,) int64, -100 = unknown
    itm_label: int                   # 1 match, 0 mismatch, -100 not an ITM sample (questions)
    qa_label: int                    # answer index, -100 none
    mask_seed: tuple[int, ...]       # seeds the collate function's masking of this sample
    # "random" (15% of words, 80/10/10, and 15% of regions), "random_and_grounded" (that, and every grounded
    # word [MASK]: colour words and relation words), "attributes" (exactly the colour words), "none"
    masking: str = "random"
    # Phrase grounding: token positions inside a phrase that names a region, and that region's index.
    phrase_positions: np.ndarray = field(default_factory=lambda: _NO_POSITIONS)
    phrase_regions: np.ndarray = field(default_factory=lambda: _NO_POSITIONS)
    # MLM targets whatever the ITM label, in an ITM sample of a relation caption whose text is the caption or its
    # flipped relation: the positions of the relation words a flip changes, and the caption's words there (the
    # relation the image shows).
    shown_relation_positions: np.ndarray = field(default_factory=lambda: _NO_POSITIONS)
    shown_relation_ids: np.ndarray = field(default_factory=lambda: _NO_POSITIONS)


class AnswerVocab:
    """Answers of the training questions, most frequent first, at most `size` of them."""

    def __init__(self, answers: list[str]):
        self.answers = list(answers)
        self._index = {a: i for i, a in enumerate(self.answers)}

    @classmethod
    def from_texts(cls, texts: list[TextRecord], size: int) -> "AnswerVocab":
        counts = Counter(t.answer for t in texts if t.kind == "question")
        return cls([a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]])

    def index(self, answer: str | None) -> int:
        return self._index.get(answer, -100)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.answers) + "\n")

    @classmethod
    def load(cls, path) -> "AnswerVocab":
        return cls(json.loads(Path(path).read_text()))

    def __len__(self) -> int:
        return len(self.answers)


def _token_positions(offsets: list[tuple[int, int]], spans) -> np.ndarray:
    """Positions of the tokens that lie inside any of the character spans."""
    return np.array([i for i, (s, e) in enumerate(offsets) if e > s and any(a <= s and e <= b for a, b in spans)],
                    dtype=np.int64)


def _relation_positions(offsets: list[tuple[int, int]], spans) -> np.ndarray:
    """Positions of the tokens of each relation span, each span extended over the words after it to at least
    RELATION_MASK_TOKENS tokens (never over special tokens)."""
    words = [i for i, (s, e) in enumerate(offsets) if e > s]
    out = []
    for a, b in spans:
        inside = [k for k, i in enumerate(words) if a <= offsets[i][0] and offsets[i][1] <= b]
        if inside:
            out += words[inside[0]:max(inside[-1] + 1, inside[0] + RELATION_MASK_TOKENS)]
    return np.unique(np.array(out, dtype=np.int64))


def _flipped_relations(caption: list[int], relations: np.ndarray,
                       negatives: list[list[int]]) -> tuple[np.ndarray, np.ndarray, frozenset[int]]:
    """(positions, ids, flips): the hard negatives (their indices) that differ from the caption only in its relation
    words, as a flipped relation does ("left of" -> "right of"), the token positions where they differ, and the
    caption's tokens there (the relation its image shows)."""
    changed, flips = set(), set()
    if not len(relations):
        return _NO_POSITIONS, _NO_POSITIONS, frozenset()
    relation_words = set(relations.tolist())
    for k, negative in enumerate(negatives):
        if len(negative) != len(caption):
            continue
        differ = {i for i, (a, b) in enumerate(zip(caption, negative)) if a != b}
        if differ and differ <= relation_words:
            changed |= differ
            flips.add(k)
    if not flips:
        return _NO_POSITIONS, _NO_POSITIONS, frozenset()
    positions = np.array(sorted(changed), dtype=np.int64)
    return positions, np.asarray(caption, dtype=np.int64)[positions], frozenset(flips)


def _phrase_tokens(offsets: list[tuple[int, int]], phrases) -> tuple[np.ndarray, np.ndarray]:
    """(positions, regions): each token inside a (start, end, region) phrase, and the region it names."""
    pairs = [(i, r) for i, (s, e) in enumerate(offsets) if e > s for a, b, r in phrases if a <= s and e <= b]
    return (np.array([i for i, _ in pairs], dtype=np.int64), np.array([r for _, r in pairs], dtype=np.int64))


def _check_images(features, texts: list[TextRecord]) -> None:
    """Every text's image has features, and every phrase names one of its regions: checked before any sample is
    drawn (the readers check files already; this covers corpora built in memory)."""
    for index, text in enumerate(texts):
        if text.image_id not in features:
            raise ValueError(f"corpus: text {index} ({text.kind} {text.text!r}) is about image {text.image_id!r}, "
                             "which has no region features")
        highest = max((r for *_, r in text.phrases), default=-1)
        if highest >= features.num_regions(text.image_id):
            raise ValueError(f"corpus: text {index}: caption {text.text!r} names region {highest} of image "
                             f"{text.image_id!r}, which has {features.num_regions(text.image_id)} regions")


class PretrainingDataset(torch.utils.data.Dataset):
    """Indexed by (epoch, text index).

    purpose "train": words and regions are masked at random. Questions keep their image and carry their answer.
    A caption with grounded words (colour words of objects it names unambiguously, or spatial relation words)
    is, with probability `attribute_mask_rate`, an attribute sample in the manner of ERNIE-ViL's attribute and
    relationship prediction: its own image, all those words [MASK], and no ITM label, since a mismatching text
    has no tagged words and the masks would give its label away. Every other caption is an ITM sample, paired with
    a mismatching text half of the time (hard negatives included), so ITM stays balanced for every kind of
    caption.
    Every sample whose text is its own caption carries the caption's phrase grounding (each token of a phrase
    and the region it names), for the grounding task and its evaluation.
    "itm_eval": two samples per caption, its own (1) and a mismatching text (0), nothing masked.
    "attribute_eval": the captions with grounded colour words, their own image, exactly those words masked.
    "relation_eval": the captions with relation words, their own image, those words masked, each relation as
    RELATION_MASK_TOKENS tokens at least (see `_relation_positions`).

    A caption with relation words is an attribute sample with probability `relation_mask_rate` (default: the
    attribute mask rate). When it is an ITM sample and its text is its own or a hard negative that flips its
    relation, the words that tell the relations apart carry MLM targets whatever the ITM label: the relation the
    image shows. A flipped negative then says which of its words is false, where its ITM label alone says only
    that one is.
    """

    def __init__(self, corpus: Corpus, tokenizer: WordPieceTokenizer, answers: AnswerVocab, seed: int = 0,
                 purpose: str = "train", attribute_mask_rate: float = 0.0, relation_mask_rate: float | None = None):
        if purpose not in PURPOSES:
            raise ValueError(f"purpose: expected one of {PURPOSES}, got {purpose!r}")
        if relation_mask_rate is None:
            relation_mask_rate = attribute_mask_rate
        for name, rate in (("attribute_mask_rate", attribute_mask_rate), ("relation_mask_rate", relation_mask_rate)):
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name}: expected a rate in [0, 1], got {rate!r}")
        self.corpus, self.answers, self.seed, self.purpose = corpus, answers, seed, purpose
        self.attribute_mask_rate, self.relation_mask_rate = attribute_mask_rate, relation_mask_rate
        texts = corpus.texts
        if purpose != "train":
            tagged = {"itm_eval": lambda t: True, "attribute_eval": lambda t: t.attribute_spans,
                      "relation_eval": lambda t: t.relation_spans}[purpose]
            texts = [t for t in texts if t.kind == "caption" and tagged(t)]
            if not texts:
                raise ValueError(f"corpus: no captions for {purpose}")
        self.texts = texts
        _check_images(corpus.features, texts)
        encoded = encode_cached(tokenizer, [t.text for t in texts], corpus.cache_dir)
        self.token_ids = [e.ids for e in encoded]
        self.attribute_positions = [_token_positions(e.offsets, t.attribute_spans) for e, t in zip(encoded, texts)]
        relation_positions = [_token_positions(e.offsets, t.relation_spans) for e, t in zip(encoded, texts)]
        self.mask_rates = [relation_mask_rate if t.relation_spans else attribute_mask_rate for t in texts]
        # What an attribute sample masks in training; evaluation masks the colour words alone.
        self.grounded_positions = [np.union1d(a, r).astype(np.int64)
                                   for a, r in zip(self.attribute_positions, relation_positions)]
        if purpose == "relation_eval":
            self.relation_positions = [_relation_positions(e.offsets, t.relation_spans)
                                       for e, t in zip(encoded, texts)]
        self.phrase_tokens = [_phrase_tokens(e.offsets, t.phrases) for e, t in zip(encoded, texts)]
        negatives = [n for t in texts for n in t.hard_negatives]
        negative_ids = iter(e.ids for e in encode_cached(tokenizer, negatives, corpus.cache_dir))
        self.hard_negative_ids = [[next(negative_ids) for _ in t.hard_negatives] for t in texts]
        self.flipped_relations = [_flipped_relations(ids, positions, negatives) for ids, positions, negatives
                                  in zip(self.token_ids, relation_positions, self.hard_negative_ids)]
        self.captions = np.array([i for i, t in enumerate(texts) if t.kind == "caption"], dtype=np.int64)
        draws_mismatches = purpose == "itm_eval" or any(
            t.kind == "caption" and (rate < 1.0 or not len(g))
            for t, g, rate in zip(texts, self.grounded_positions, self.mask_rates))
        if draws_mismatches and len({texts[i].image_id for i in self.captions}) < 2:
            raise ValueError("corpus: every caption describes the same image, so an image-text matching sample has "
                             "no mismatching caption to pair with")

    def __len__(self) -> int:
        return 2 * len(self.texts) if self.purpose == "itm_eval" else len(self.texts)

    def _mismatch(self, index: int, rng: np.random.Generator, record) -> tuple[np.ndarray, int]:
        """(token ids, hard negative index or -1) of a text that does not describe this caption's image (`record`,
        already read): a hard negative, or a caption of another image (checked false against this image when the
        captions carry their meaning)."""
        hard = self.hard_negative_ids[index]
        if hard and rng.random() < HARD_NEGATIVE_RATE:
            k = int(rng.integers(len(hard)))
            return hard[k], k
        own = self.texts[index].image_id
        names = [[_NAMES[0][a] if 0 <= a < len(_NAMES[0]) else "" for a in record.attr_ids],
                 [_NAMES[1][o] if 0 <= o < len(_NAMES[1]) else "" for o in record.object_ids]]
        for _ in range(100):
            other = int(self.captions[int(rng.integers(len(self.captions)))])
            text = self.texts[other]
            if text.image_id != own and not (text.meaning and holds(text.meaning, names[0], names[1], record.boxes)):
                return self.token_ids[other], -1
        raise ValueError(f"corpus: found no mismatching caption for image {own!r} in 100 draws")

    def __getitem__(self, key) -> Sample:
        epoch, index = key
        negative = 0
        if self.purpose == "itm_eval":
            index, negative = divmod(index, 2)
        rng = np.random.default_rng([self.seed, epoch, index])
        masking, qa_label = "random", -100
        if self.purpose == "itm_eval":
            itm, masking = 1 - negative, "none"
        elif self.purpose in ("attribute_eval", "relation_eval"):
            itm, masking = 1, "attributes"
        else:
            text = self.texts[index]
            if text.kind == "question":
                itm, qa_label = -100, self.answers.index(text.answer)
            elif len(self.grounded_positions[index]) and rng.random() < self.mask_rates[index]:
                itm, masking = -100, "random_and_grounded"
            else:
                itm = 0 if rng.random() < NEGATIVE_RATE else 1
        record = self.corpus.features[self.texts[index].image_id]
        token_ids, negative_index = (self.token_ids[index], -1) if itm != 0 else self._mismatch(index, rng, record)
        labels = np.where(record.object_ids >= 0, record.object_ids, -100)
        grounded = (self.grounded_positions[index] if masking == "random_and_grounded"
                    else self.relation_positions[index] if self.purpose == "relation_eval"
                    else self.attribute_positions[index] if masking == "attributes" else _NO_POSITIONS)
        phrase_positions, phrase_regions = self.phrase_tokens[index] if itm != 0 else (_NO_POSITIONS, _NO_POSITIONS)
        shown_positions, shown_ids = _NO_POSITIONS, _NO_POSITIONS
        relation_positions, relation_ids, flips = self.flipped_relations[index]
        if self.purpose == "train" and (itm == 1 or (itm == 0 and negative_index in flips)):
            shown_positions, shown_ids = relation_positions, relation_ids
        return Sample(token_ids, grounded, record.features, record.normalised_boxes(), labels, itm, qa_label,
                      (self.seed, epoch, index, 1), masking, phrase_positions, phrase_regions,
                      shown_positions, shown_ids)
