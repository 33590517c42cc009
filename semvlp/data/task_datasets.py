"""Samples and batches of the downstream tasks, built from the same corpora as pretraining.

- question answering: each question with its image; the target is the soft VQA score of every answer in the
  answer vocabulary (`semvlp.eval.soft_scores`);
- image-text matching: each caption with its own image (1) and with a mismatching text (0), half of those a
  hard negative, drawn as in pretraining (`PretrainingDataset`, purpose "itm_eval") with new draws each epoch;
- paired reasoning (NLVR2-style): a statement with its left and its right image, true (1) or false (0), or -1
  for a statement without a label (read for predictions).

A batch packs (text, regions) samples as pretraining does; paired examples put their two samples side by side.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from ..model.inputs import PackedLayout
from .answers import normalize_answer, soft_scores
from .boxes import box_features
from .corpus import Corpus
from .dataset import AnswerVocab, PretrainingDataset
from .records import PairRecord
from .tokenizer import WordPieceTokenizer

DOWNSTREAM_TASKS = ("qa", "itm", "nlvr2")


def _index(key) -> int:
    """Datasets are read with (epoch, index) keys (as in pretraining) or plain indices."""
    return key[1] if isinstance(key, tuple) else key


def answer_vocab(corpus: Corpus, size: int) -> AnswerVocab:
    """The `size` most common processed answers of the corpus's questions (ties in alphabetical order), each
    spelled as the human answers most often spell it: when all humans agree, the official evaluation compares
    their answer unprocessed, so "two" given ten times credits "two" and not "2"."""
    answered = [t for t in corpus.texts if t.kind == "question" and t.answer is not None]
    counts = Counter(normalize_answer(t.answer) for t in answered)
    if not counts:
        raise ValueError("corpus: expected questions with answers to build an answer vocabulary from, found none")
    spellings = human_spellings(answered)
    chosen = [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]
    return AnswerVocab([usual_spelling(spellings, a) for a in chosen])


def human_spellings(questions) -> dict[str, Counter]:
    """{processed answer: Counter of the human answers that process to it} over the questions' answers."""
    spellings: dict[str, Counter] = {}
    for question in questions:
        for human in question.answers or (question.answer,):
            spellings.setdefault(normalize_answer(human), Counter())[human] += 1
    return spellings


def usual_spelling(spellings: dict[str, Counter], answer: str) -> str:
    """How humans most often spell the processed `answer` (ties in alphabetical order); itself if never seen."""
    counts = spellings.get(answer)
    return min(counts, key=lambda spelling: (-counts[spelling], spelling)) if counts else answer


@dataclass
class Example:
    token_ids: list[np.ndarray]   # one (n,) int64 text per sample (paired examples: the statement twice)
    features: list[np.ndarray]    # (r, feature_dim) float32 per sample
    boxes: list[np.ndarray]       # (r, 4) float32 normalised xyxy per sample
    target: np.ndarray            # qa: (num_answers,) float32 soft scores; itm, nlvr2: () int64 label


@dataclass
class DownstreamBatch:
    input_ids: torch.Tensor       # (total_text,) int64
    region_features: torch.Tensor  # (total_regions, visual_feat_dim)
    region_boxes: torch.Tensor    # (total_regions, visual_pos_dim)
    layout: PackedLayout          # one sample per (text, image); paired examples give two samples
    targets: torch.Tensor         # qa: (B, num_answers) float; itm, nlvr2: (B,) int64

    def to(self, device, non_blocking: bool = False) -> "DownstreamBatch":
        return DownstreamBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                                  for f in dataclasses.fields(self)})

    def inputs(self, dtype: torch.dtype | None = None) -> tuple:
        """(input_ids, region_features, region_boxes, layout): the positional inputs of the downstream models."""
        features, boxes = self.region_features, self.region_boxes
        if dtype is not None:
            features, boxes = features.to(dtype), boxes.to(dtype)
        return self.input_ids, features, boxes, self.layout


def collate(examples: list[Example], box_dim: int) -> DownstreamBatch:
    if not examples:
        raise ValueError("examples: expected at least one example, got none")
    ids = [t for e in examples for t in e.token_ids]
    features = [f for e in examples for f in e.features]
    boxes = [b for e in examples for b in e.boxes]
    return DownstreamBatch(
        input_ids=torch.from_numpy(np.concatenate(ids)).long(),
        region_features=torch.from_numpy(np.concatenate(features)),
        region_boxes=box_features(torch.from_numpy(np.concatenate(boxes)), box_dim),
        layout=PackedLayout.from_lengths([len(t) for t in ids], [len(f) for f in features]),
        targets=torch.from_numpy(np.stack([e.target for e in examples])))


class QuestionAnsweringDataset(torch.utils.data.Dataset):
    """The corpus's questions; targets are soft scores over `answers` (questions whose answers are all outside
    the vocabulary get an all-zero target and still count, as wrong, in evaluation). Questions without answers
    (a questions file read alone, for predictions) get an all-zero target too."""

    def __init__(self, corpus: Corpus, tokenizer: WordPieceTokenizer, answers: AnswerVocab):
        self.corpus, self.answers = corpus, answers
        self.questions = [t for t in corpus.texts if t.kind == "question"]
        if not self.questions:
            raise ValueError("corpus: expected questions for question answering, found none")
        self.token_ids = [e.ids for e in tokenizer.encode_batch([q.text for q in self.questions])]
        index = {normalize_answer(a): i for i, a in enumerate(answers.answers)}
        self.targets = np.zeros((len(self.questions), len(answers)), dtype=np.float32)
        for row in range(len(self.questions)):
            if self.human_answers(row):
                for column, score in soft_scores(self.human_answers(row), index).items():
                    self.targets[row, column] = score

    def human_answers(self, index: int) -> tuple[str, ...]:
        """Every human answer of the question (its one answer where only that is known; none without answers)."""
        question = self.questions[index]
        return question.answers or ((question.answer,) if question.answer is not None else ())

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, key) -> Example:
        index = _index(key)
        record = self.corpus.features[self.questions[index].image_id]
        return Example([self.token_ids[index]], [record.features], [record.normalised_boxes()], self.targets[index])


class MatchingDataset(torch.utils.data.Dataset):
    """Two samples per caption (matching and mismatching), item = (epoch, index) as in pretraining, so each
    epoch draws new negatives."""

    def __init__(self, corpus: Corpus, tokenizer: WordPieceTokenizer, seed: int = 0):
        self.pairs = PretrainingDataset(corpus, tokenizer, AnswerVocab([]), seed=seed, purpose="itm_eval")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key) -> Example:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        sample = self.pairs[(epoch, index)]
        return Example([sample.token_ids], [sample.features], [sample.boxes], np.array(sample.itm_label))


class PairedReasoningDataset(torch.utils.data.Dataset):
    """The statements with their two images; a statement read without a label (for predictions) gets the target
    -1, which cross-entropy rejects (training and evaluation read labelled statements only)."""

    def __init__(self, pairs: list[PairRecord], features, tokenizer: WordPieceTokenizer):
        if not pairs:
            raise ValueError("pairs: expected NLVR2 statements, got none")
        self.pairs, self.features = pairs, features
        self.token_ids = [e.ids for e in tokenizer.encode_batch([p.text for p in pairs])]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key) -> Example:
        index = _index(key)
        pair = self.pairs[index]
        left, right = self.features[pair.left_image_id], self.features[pair.right_image_id]
        return Example([self.token_ids[index]] * 2, [left.features, right.features],
                       [left.normalised_boxes(), right.normalised_boxes()],
                       np.array(-1 if pair.label is None else int(pair.label)))
