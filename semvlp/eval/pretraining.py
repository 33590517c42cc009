"""Held-out evaluation: image-text matching accuracy, masked-word accuracy on attribute (colour) words and on
relation words, and phrase grounding accuracy.

ITM: every caption of the split with its own image and with a mismatching text (half hard negatives), nothing
masked; also per kind of caption where captions carry one (the synthetic data's object, pair, relation, count
and absence), which shows whether the ITM head reads the image or only the kind of text. Attribute MLM: the
captions' grounded colour words (each names the colour of the one object of its shape in the scene) are
masked and predicted. Relation MLM: the relation words of relation captions are masked, two tokens each
("left of", "above a") so that the count of [MASK]s does not give the axis away, and the relation word itself
("left", "above"; not the "of" or the word after) is scored. Phrase grounding: each word of a phrase of the matching
captions (in the ITM pass) picks the region it names among its image's regions (one of them, for a word that
names several). Work is split across ranks and every rank runs the same number of forward passes, since under
ZeRO-3 each forward gathers parameters from all ranks.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ..data.collate import Collator
from ..data.dataset import AnswerVocab, PretrainingDataset
from ..data.synthetic.language import RELATION_WORDS

EVAL_SEED = 1234


def _caption_kinds(dataset: PretrainingDataset) -> list[str]:
    return sorted({t.category for t in dataset.texts if t.category})


def _accuracy_counts(engine, dataset: PretrainingDataset, collator: Collator, mode: str, batch_size: int,
                     rank: int, world: int, dtype, device, scored_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[itm correct, itm total, mlm correct, mlm total, grounding correct, grounding total, then, for an
    "itm_eval" dataset, itm correct and total for each of `_caption_kinds(dataset)`] summed over every rank.
    `scored_ids`: MLM counts only the masked words whose target is one of these token ids."""
    indices = list(range(rank, len(dataset), world))
    per_rank = math.ceil(len(dataset) / world)
    kinds = {kind: i for i, kind in enumerate(_caption_kinds(dataset))} if dataset.purpose == "itm_eval" else {}
    counts = torch.zeros(6 + 2 * len(kinds), dtype=torch.float64)
    for b in range(math.ceil(per_rank / batch_size)):
        chunk = indices[b * batch_size:(b + 1) * batch_size]
        batch = collator([dataset[(0, i)] for i in (chunk or [0])])
        out = engine(batch.to(device, non_blocking=True, feature_dtype=dtype), mode=mode)
        if not chunk:
            continue
        labels = batch.itm_labels
        if out.itm_logits is not None:
            keep = labels != -100
            correct = out.itm_logits.argmax(-1).cpu() == labels
            counts[0] += correct[keep].sum().item()
            counts[1] += keep.sum().item()
            for i, ok, kept in zip(chunk, correct.tolist(), keep.tolist()):
                kind = dataset.texts[i // 2].category  # itm_eval: samples 2i and 2i+1 come from caption i
                if kept and kind in kinds:
                    counts[6 + 2 * kinds[kind]] += ok
                    counts[7 + 2 * kinds[kind]] += 1
        if out.mlm_logits is not None and batch.mlm_targets.numel():
            scored = torch.ones_like(batch.mlm_targets, dtype=torch.bool) if scored_ids is None \
                else torch.isin(batch.mlm_targets, scored_ids)
            counts[2] += (out.mlm_logits.argmax(-1).cpu() == batch.mlm_targets)[scored].sum().item()
            counts[3] += scored.sum().item()
        if out.grounding_logits is not None and batch.grounding_targets.numel():
            # A word that names several regions ("circles") is right when it picks any of them.
            hits = (out.grounding_logits.argmax(-1).cpu() == batch.grounding_targets).float()
            words, word_of_row = batch.grounding_positions.unique(return_inverse=True)
            counts[4] += torch.zeros(len(words)).scatter_reduce(0, word_of_row, hits, "amax").sum().item()
            counts[5] += len(words)
    dist.all_reduce(counts)
    return counts


def evaluate(engine, held_out: dict, tokenizer, answers: AnswerVocab, collator: Collator, modes: list[str],
             batch_size: int, rank: int, world: int, dtype, device) -> dict[str, float]:
    """{"<split>/<mode>/itm_accuracy": ..., "<split>/<mode>/attribute_mlm_accuracy": ...,
    "<split>/<mode>/relation_mlm_accuracy": ...} for each split, and "<split>/<mode>/itm_accuracy_<kind>" for
    each kind of caption."""
    results = {}
    # Relation words are scored without the words masked beside them ("of", and the word after "above").
    relation_ids = torch.tensor([i for i in map(tokenizer.token_to_id, RELATION_WORDS) if i is not None])
    was_training = engine.module.training
    engine.eval()
    with torch.no_grad():
        for split, corpus in held_out.items():
            itm = PretrainingDataset(corpus, tokenizer, answers, seed=EVAL_SEED, purpose="itm_eval")
            masked_words = {}  # metric -> dataset; none where no caption of the split tags such words (real data)
            for metric, purpose in (("attribute_mlm_accuracy", "attribute_eval"),
                                    ("relation_mlm_accuracy", "relation_eval")):
                try:
                    masked_words[metric] = PretrainingDataset(corpus, tokenizer, answers, seed=EVAL_SEED,
                                                              purpose=purpose)
                except ValueError:
                    pass
            for mode in modes:
                counts = _accuracy_counts(engine, itm, collator, mode, batch_size, rank, world, dtype, device)
                results[f"{split}/{mode}/itm_accuracy"] = counts[0].item() / max(counts[1].item(), 1)
                if counts[5] > 0:
                    results[f"{split}/{mode}/grounding_accuracy"] = counts[4].item() / counts[5].item()
                for i, kind in enumerate(_caption_kinds(itm)):
                    correct, total = counts[6 + 2 * i].item(), counts[7 + 2 * i].item()
                    results[f"{split}/{mode}/itm_accuracy_{kind}"] = correct / max(total, 1)
                for metric, dataset in masked_words.items():
                    scored = relation_ids if metric == "relation_mlm_accuracy" else None
                    counts = _accuracy_counts(engine, dataset, collator, mode, batch_size, rank, world, dtype,
                                              device, scored)
                    results[f"{split}/{mode}/{metric}"] = counts[2].item() / max(counts[3].item(), 1)
    engine.train(was_training)
    return results


def format_results(results: dict[str, float], sizes: dict[str, int]) -> str:
    """A table: one row per split and headline metric (of the per-kind ITM, relation captions only), one column
    per mode."""
    modes = sorted({key.split("/")[1] for key in results}, key=["single", "two"].index)
    split_order = {"val": 0, "novel": 1}
    names = {"itm_accuracy": "image-text matching", "itm_accuracy_relation": "image-text matching, relations",
             "attribute_mlm_accuracy": "masked attribute words", "relation_mlm_accuracy": "masked relation words",
             "grounding_accuracy": "phrase grounding"}
    order = list(names)
    rows = sorted({(key.split("/")[0], key.split("/")[2]) for key in results if key.split("/")[2] in names},
                  key=lambda r: (split_order.get(r[0], 9), order.index(r[1])))
    splits = {"val": "held-out scenes", "novel": "held-out colour-shape combinations"}
    labels = [f"{names[metric]}, {splits.get(split, split)} ({sizes.get(split, '?')} images)"
              for split, metric in rows]
    width = max(len(label) for label in labels) + 2
    lines = [" " * width + "".join(f"{m + '-stream':>15}" for m in modes)]
    for label, (split, metric) in zip(labels, rows):
        cells = "".join(f"{100 * results[f'{split}/{m}/{metric}']:>14.1f}%" if f"{split}/{m}/{metric}" in results
                        else f"{'-':>15}" for m in modes)
        lines.append(f"{label:{width}}{cells}")
    return "\n".join(lines)
