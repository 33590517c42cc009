"""Evaluation of the downstream models: VQA accuracy per question type, image-text matching (overall and on
hard negatives by type), retrieval recall, and paired-reasoning accuracy.

Every function runs the model in eval mode without gradients, in batches of packed samples.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..data.corpus import Corpus
from ..data.synthetic.language import GRANULARITY, hard_negative_types
from ..data.task_datasets import (DownstreamBatch, Example, MatchingDataset, PairedReasoningDataset,
                                  QuestionAnsweringDataset, collate)
from ..data.tokenizer import WordPieceTokenizer
from .retrieval import recall_at_k, score_all_pairs
from .vqa import vqa_accuracy

# Synthetic captions of these kinds name specific objects, so few other images of a pool match them: the retrieval
# queries. Captions without a kind (real captions, e.g. COCO's) are all queries.
RETRIEVAL_CAPTION_KINDS = ("pair", "relation")
RETRIEVAL_KS = (1, 5, 10)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def run_model(model: torch.nn.Module, examples: Sequence[Example] | torch.utils.data.Dataset, mode: str,
              batch_size: int = 128, desc: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of every example, in order, on the CPU."""
    was_training = model.training
    model.eval()
    device, box_dim = _device(model), model.config.visual_pos_dim
    logits, targets = [], []
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        batch: DownstreamBatch = collate([examples[i] for i in range(start, min(start + batch_size, len(examples)))],
                                         box_dim).to(device)
        logits.append(model(*batch.inputs(), mode=mode).float().cpu())
        targets.append(batch.targets.cpu())
    model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


def evaluate_qa(model, dataset: QuestionAnsweringDataset, mode: str, batch_size: int = 128,
                desc: str | None = None) -> dict[str, float]:
    """{"accuracy", "type/<category>", and for the synthetic categories "granularity/fine", "granularity/high"}.
    The prediction is the highest-scoring answer; its VQA score is computed against all human answers."""
    humans = [dataset.human_answers(i) for i in range(len(dataset))]
    unanswered = sum(not h for h in humans)
    if unanswered:
        raise ValueError(f"dataset: {unanswered} of {len(humans)} questions have no answers (questions read without "
                         f"their annotations); evaluation needs the annotations, `semvlp predict` takes questions "
                         f"alone")
    logits, _ = run_model(model, dataset, mode, batch_size, desc)
    predictions = [dataset.answers.answers[i] for i in logits.argmax(-1).tolist()]
    return qa_metrics(predictions, humans, [q.category for q in dataset.questions])


def qa_metrics(predictions: list[str], humans: list[Sequence[str]], categories: list[str | None]) -> dict[str, float]:
    """The keys of `evaluate_qa` for given predictions."""
    per_type = vqa_accuracy(predictions, humans, [c if c is not None else "unknown" for c in categories])
    results = {"accuracy": per_type.pop("overall")}
    results.update(per_type)
    if all(c in GRANULARITY for c in categories):
        coarse = vqa_accuracy(predictions, humans, [GRANULARITY[c] for c in categories])
        results.update({f"granularity/{k.split('/', 1)[1]}": v for k, v in coarse.items() if k != "overall"})
    return results


def matching_scores(logits: torch.Tensor) -> torch.Tensor:
    """How much the model believes a pair matches: the log-odds of the match class."""
    return logits[:, 1] - logits[:, 0]


def _text_example(token_ids: np.ndarray, record, label: int) -> Example:
    return Example([token_ids], [record.features], [record.normalised_boxes()], np.array(label))


def evaluate_itm(model, corpus: Corpus, tokenizer: WordPieceTokenizer, mode: str, batch_size: int = 128,
                 seed: int = 1234, desc: str | None = None) -> dict[str, float]:
    """{"accuracy": match/mismatch classification of every caption with its own image and with a mismatching
    text (half hard negatives, as in pretraining), "hard/<type>": the share of (caption, hard negative) pairs
    in which the true caption scores higher with the image, per type of change (see
    `semvlp.data.synthetic.language.hard_negative_types`)}."""
    pairs = MatchingDataset(corpus, tokenizer, seed=seed)
    logits, labels = run_model(model, pairs, mode, batch_size, desc)
    results = {"accuracy": (logits.argmax(-1) == labels).float().mean().item()}
    captions = [t for t in corpus.texts if t.kind == "caption" and t.hard_negatives]
    if not captions:
        return results
    positives = [e.ids for e in tokenizer.encode_batch([t.text for t in captions])]
    negatives = iter(e.ids for e in tokenizer.encode_batch([n for t in captions for n in t.hard_negatives]))
    examples, contests = [], []  # contests: (caption's position, hard negative's position, type)
    for caption, ids in zip(captions, positives):
        record = corpus.features[caption.image_id]
        own = len(examples)
        examples.append(_text_example(ids, record, 1))
        for kind in hard_negative_types(caption.category, len(caption.hard_negatives)):
            contests.append((own, len(examples), kind))
            examples.append(_text_example(next(negatives), record, 0))
    scores = matching_scores(run_model(model, examples, mode, batch_size, desc)[0])
    wins = defaultdict(list)
    for own, negative, kind in contests:
        wins[kind].append(float(scores[own] > scores[negative]))
    results.update({f"hard/{kind}": float(np.mean(v)) for kind, v in sorted(wins.items())})
    return results


def evaluate_retrieval(model, corpus: Corpus, tokenizer: WordPieceTokenizer, mode: str, num_images: int = 100,
                       batch_size: int = 256, ks: Sequence[int] = RETRIEVAL_KS,
                       caption_kinds: Sequence[str] | None = RETRIEVAL_CAPTION_KINDS,
                       desc: str | None = None) -> dict[str, float]:
    """Recall@k in both directions over a pool of the split's first `num_images` images (by id) and their
    captions (see `retrieval_pool`); every (caption, image) pair of the pool is scored by the matching model,
    `batch_size` pairs per forward pass."""
    captions, pool = checked_retrieval_pool(corpus, num_images, max(ks), caption_kinds)
    column = {image_id: i for i, image_id in enumerate(pool)}
    scores = retrieval_scores(model, corpus, tokenizer, captions, pool, mode, batch_size, desc)
    recall = recall_at_k(scores, [column[t.image_id] for t in captions], ks)
    return {f"{key.split('/')[0]}/R@{key.split('@')[1]}": value for key, value in recall.items()}


def retrieval_scores(model, corpus: Corpus, tokenizer: WordPieceTokenizer, captions: Sequence, pool: Sequence[str],
                     mode: str, batch_size: int = 256, desc: str | None = None) -> torch.Tensor:
    """(len(captions), len(pool)) matching scores of every caption with every image of the pool."""
    token_ids = [e.ids for e in tokenizer.encode_batch([t.text for t in captions])]
    records = [corpus.features[i] for i in pool]
    progress = tqdm(total=len(captions) * len(pool), desc=desc, disable=desc is None, leave=False, unit="pair")

    def score_pairs(texts: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        examples = [_text_example(token_ids[t], records[i], 0) for t, i in zip(texts.tolist(), images.tolist())]
        progress.update(len(examples))
        return matching_scores(run_model(model, examples, mode, len(examples))[0])

    scores = score_all_pairs(score_pairs, len(captions), len(pool), batch_size)
    progress.close()
    return scores


def retrieval_pool(corpus: Corpus, num_images: int, caption_kinds: Sequence[str] | None = RETRIEVAL_CAPTION_KINDS):
    """(captions, image ids) of the retrieval pool: the first `num_images` images by id that have query captions,
    and those captions. Queries are the captions of `caption_kinds` (all kinds when None) and every caption
    without a kind (real captions)."""
    captions = [t for t in corpus.texts if t.kind == "caption"
                and (caption_kinds is None or t.category is None or t.category in caption_kinds)]
    pool = sorted({t.image_id for t in captions}, key=lambda i: (len(i), i))[:num_images]
    chosen = set(pool)
    return [t for t in captions if t.image_id in chosen], pool


def checked_retrieval_pool(corpus: Corpus, num_images: int, largest_k: int,
                           caption_kinds: Sequence[str] | None = RETRIEVAL_CAPTION_KINDS):
    """`retrieval_pool`, with an error when it has fewer images than `largest_k` (recall@k would mean nothing)."""
    captions, pool = retrieval_pool(corpus, num_images, caption_kinds)
    if len(pool) < largest_k:
        raise ValueError(f"num_images: the pool has {len(pool)} images with captions, fewer than the largest k "
                         f"({largest_k})")
    return captions, pool


def evaluate_nlvr2(model, dataset: PairedReasoningDataset, mode: str, batch_size: int = 128,
                   desc: str | None = None) -> dict[str, float]:
    logits, labels = run_model(model, dataset, mode, batch_size, desc)
    return {"accuracy": (logits.argmax(-1) == labels).float().mean().item()}
