"""`semvlp finetune` and `semvlp eval`: a downstream task's data from a data folder, fine-tuning from a pretraining
export, and evaluation on held-out splits.

Tasks and what they read from DIR (the formats of pretraining, see `semvlp.data.corpus`):
    qa      vqa_questions_<split>.json + vqa_annotations_<split>.json   -> VQA accuracy, per question type
    itm     captions_<split>.json (hard negatives where the captions carry them)
                                                       -> matching accuracy, hard negatives by type, recall@k
    nlvr2   nlvr2_<split>.json                         -> true/false accuracy
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data.corpus import feature_statistics, load_corpus, load_pairs
from ..data.dataset import AnswerVocab
from ..data.formats import open_features
from ..data.records import BadRecords
from ..data.task_datasets import MatchingDataset, PairedReasoningDataset, QuestionAnsweringDataset, answer_vocab
from ..data.tokenizer import WordPieceTokenizer
from ..eval.task_eval import (RETRIEVAL_KS, checked_retrieval_pool, evaluate_itm, evaluate_nlvr2, evaluate_qa,
                              evaluate_retrieval)
from ..model import SemVLPConfig
from ..train.distributed import distributed_run, setup_logging
from ..train.precision import autocast, resolve_precision
from ..train.run_data import expand_feature_files, resolve_num_workers
from ..train.run_folder import check_output
from .loop import FinetuneOptions, finetune, init_model, save_finetuned

if TYPE_CHECKING:  # engine_loop needs DeepSpeed (semvlp[train]); imported when a run uses it
    from .engine_loop import EngineOptions

logger = logging.getLogger("semvlp.finetune")


def tokenizer_for(config: SemVLPConfig, vocab) -> WordPieceTokenizer:
    tokenizer = WordPieceTokenizer(vocab, max_length=config.max_position_embeddings)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"vocab: {tokenizer.vocab_path} has {tokenizer.vocab_size} tokens but the model has "
                         f"{config.vocab_size} word embeddings; pass the vocab.txt the model was pretrained with")
    return tokenizer


class TaskData:
    """A data folder opened once: its features, and the datasets of a task's splits."""

    def __init__(self, folder, tokenizer: WordPieceTokenizer, feature_dim: int, feature_format: str | None = None,
                 bad: BadRecords | None = None, feature_files=None):
        """`feature_files`: paths or glob patterns (relative to the working directory) of the feature files to
        read instead of the folder's own (`semvlp.train.run_data.expand_feature_files`)."""
        self.folder, self.tokenizer, self.bad = Path(folder), tokenizer, bad or BadRecords()
        files = None if feature_files is None else expand_feature_files(feature_files, feature_format)
        self.features = open_features(self.folder, feature_format, self.bad, feature_dim=feature_dim, files=files)
        self._corpora = {}

    def corpus(self, split: str):
        if split not in self._corpora:
            self._corpora[split] = load_corpus(self.folder, split, features=self.features, bad=self.bad)
        return self._corpora[split]

    def answers(self, split: str, size: int) -> AnswerVocab:
        return answer_vocab(self.corpus(split), size)

    def image_ids(self, task: str, split: str) -> set[str]:
        """The images a task's split reads."""
        if task == "nlvr2":
            pairs = load_pairs(self.folder, split, self.features, self.bad)
            return {i for p in pairs for i in (p.left_image_id, p.right_image_id)}
        return {t.image_id for t in self.corpus(split).texts}

    def dataset(self, task: str, split: str, answers: AnswerVocab | None = None, seed: int = 0):
        if task == "qa":
            return QuestionAnsweringDataset(self.corpus(split), self.tokenizer, answers)
        if task == "itm":
            return MatchingDataset(self.corpus(split), self.tokenizer, seed=seed)
        return PairedReasoningDataset(load_pairs(self.folder, split, self.features, self.bad), self.features,
                                      self.tokenizer)


def evaluate(model, options: FinetuneOptions, data: TaskData, split: str, batch_size: int = 128,
             retrieval_images: int = 100, progress: bool = True) -> dict[str, float]:
    """The task's metrics on one split (itm: matching, hard negatives and retrieval recall)."""
    desc = (lambda what: f"{what} {split} ({options.mode}-stream)") if progress else (lambda what: None)
    if options.task == "qa":
        dataset = data.dataset("qa", split, AnswerVocab(options.answers))
        return evaluate_qa(model, dataset, options.mode, batch_size, desc("qa"))
    if options.task == "nlvr2":
        return evaluate_nlvr2(model, data.dataset("nlvr2", split), options.mode, batch_size, desc("nlvr2"))
    corpus = data.corpus(split)
    results = evaluate_itm(model, corpus, data.tokenizer, options.mode, batch_size, desc=desc("matching"))
    results.update(evaluate_retrieval(model, corpus, data.tokenizer, options.mode, retrieval_images,
                                      max(batch_size, 256), desc=desc("retrieval")))
    return results


def run_finetune(options: FinetuneOptions, data: TaskData, config: SemVLPConfig, state_dict: dict | None,
                 output, train_split: str = "train", eval_splits: tuple[str, ...] = ("val",), max_answers: int = 3129,
                 eval_batch_size: int = 128, retrieval_images: int = 100, device: str | torch.device = "cpu",
                 progress: bool = True, engine: EngineOptions | None = None,
                 num_workers: int | str = "auto", vocab=None) -> dict[str, dict[str, float]] | None:
    """Fine-tunes, saves to `output` (with a copy of `vocab`, the tokenizer's vocab.txt, when given, so that eval
    and predict read the text as training did) and evaluates on `eval_splits`; returns {split: metrics} (also
    written to OUTPUT/results.json). With `engine` the training runs under DeepSpeed on every rank of the launch
    (semvlp.finetune.engine_loop) and rank 0 saves and evaluates; the other ranks return None. Either way the data
    is read with `num_workers` DataLoader processes per rank ("auto": `resolve_num_workers`)."""
    setup_logging()
    output = Path(output)
    if engine is not None:
        check_output(output, engine.resume, engine.overwrite)
    output.mkdir(parents=True, exist_ok=True)
    answers = None
    if options.task == "qa":
        answers = data.answers(train_split, max_answers)
        options.answers = answers.answers
    dataset = data.dataset(options.task, train_split, answers, seed=options.seed)
    if options.task == "itm":
        for split in eval_splits:  # a retrieval pool too small for recall@10 fails now, not after training
            checked_retrieval_pool(data.corpus(split), retrieval_images, max(RETRIEVAL_KS))
    model = init_model(options.task, config, state_dict, len(answers) if answers else None, options.seed)
    if engine is None:  # DeepSpeed places the model on each rank's own device
        model = model.to(device)
    if state_dict is None:
        # From scratch: standardise the region features as pretraining does (a pretrained model brings its own).
        mean, std = feature_statistics(data.features, data.image_ids(options.task, train_split))
        model.semvlp.region_embeddings.set_feature_statistics(mean, std)
    logger.info("fine-tuning %s on %d %s examples for %d steps (%s-stream)", options.task, len(dataset), train_split,
                options.steps, options.mode)
    if engine is None:
        workers, why = resolve_num_workers(num_workers, in_memory=False, local_ranks=1)
        logger.info("DataLoader: %d worker processes (%s)", workers, why)
        finetune(model, dataset, options, output / "metrics.jsonl", progress, workers)
    else:
        with distributed_run() as env:
            from .engine_loop import finetune_with_engine

            model = finetune_with_engine(model, dataset, options, engine, output, env, num_workers)
            is_main = env.is_main
        if not is_main:
            return None
    save_finetuned(model, options, output, vocab)
    # The same precision as `semvlp eval` of the saved model, so the two report the same numbers.
    with autocast(resolve_precision(options.precision, device), device):
        results = {split: evaluate(model, options, data, split, eval_batch_size, retrieval_images, progress)
                   for split in eval_splits}
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def format_metrics(results: dict[str, dict[str, float]]) -> str:
    """One line per metric, one column per split, accuracies and recalls in percent."""
    splits = list(results)
    keys = list(dict.fromkeys(k for split in splits for k in results[split]))
    width = max(len(k) for k in keys) + 2
    lines = [" " * width + "".join(f"{s:>12}" for s in splits)]
    for key in keys:
        cells = "".join(f"{100 * results[s][key]:>11.1f}%" if key in results[s] else f"{'-':>12}" for s in splits)
        lines.append(f"{key:{width}}{cells}")
    return "\n".join(lines)

