"""`semvlp predict`: a fine-tuned model's predictions on a split whose labels may be withheld, as JSON.

    vqa        DIR/vqa_questions_<split>.json alone (annotations are not read) -> [{"question_id", "answer"}], the
               VQA evaluation server's format (question ids as the questions file has them)
    retrieval  DIR/captions_<split>.json -> {"images": [pool ids], "text_to_image": [{"image_id", "caption",
               "ranked_image_ids"}], "image_to_text": [{"image_id", "ranked_captions"}]}: for each caption the
               pool's images best first, for each image the captions best first (positions in "text_to_image");
               the pool is the split's first `num_images` images by id, as in evaluation
    nlvr2      DIR/nlvr2_<split>.json, labels not needed -> [{"identifier", "prediction": "True" | "False"}], one per
               statement in the file's order
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.corpus import Corpus
from ..data.dataset import AnswerVocab
from ..data.formats import read_coco_captions, read_nlvr2
from ..data.formats.vqa import read_vqa_questions
from ..data.task_datasets import PairedReasoningDataset, QuestionAnsweringDataset
from ..eval.task_eval import retrieval_pool, retrieval_scores, run_model
from .loop import FinetuneOptions, load_finetuned
from .run import TaskData, tokenizer_for

# Prediction task -> the fine-tuning task whose model makes it.
PREDICT_TASKS = {"vqa": "qa", "retrieval": "itm", "nlvr2": "nlvr2"}


def check_model_task(task: str, options: FinetuneOptions, model_dir) -> None:
    if task not in PREDICT_TASKS:
        raise ValueError(f"task: expected one of {list(PREDICT_TASKS)}, got {task!r}")
    if options.task != PREDICT_TASKS[task]:
        raise ValueError(f"model: --task {task} needs a model fine-tuned with --task {PREDICT_TASKS[task]}; "
                         f"{model_dir} was fine-tuned with --task {options.task}")


def _split_file(data: TaskData, name: str) -> Path:
    path = data.folder / name
    if not path.is_file():
        raise ValueError(f"data: expected {name} in {data.folder}")
    return path


def predict_vqa(model, options: FinetuneOptions, data: TaskData, split: str, batch_size: int = 128,
                desc: str | None = None) -> list[dict]:
    """The highest-scoring answer of the model's vocabulary for every question of the split."""
    path = _split_file(data, f"vqa_questions_{split}.json")
    questions = read_vqa_questions(path, data.features, data.bad)
    if not questions:
        raise ValueError(f"{path}: no usable question")
    corpus = Corpus(data.features, [record for _, record in questions])
    dataset = QuestionAnsweringDataset(corpus, data.tokenizer, AnswerVocab(options.answers))
    logits, _ = run_model(model, dataset, options.mode, batch_size, desc)
    return [{"question_id": question_id, "answer": options.answers[best]}
            for (question_id, _), best in zip(questions, logits.argmax(-1).tolist())]


def predict_retrieval(model, options: FinetuneOptions, data: TaskData, split: str, num_images: int = 100,
                      top_k: int = 10, batch_size: int = 256, desc: str | None = None) -> dict:
    """Rankings in both directions over the retrieval pool (see the module docstring), `top_k` entries each."""
    if top_k < 1:
        raise ValueError(f"top_k: expected a positive int, got {top_k}")
    texts, twins = read_coco_captions(_split_file(data, f"captions_{split}.json"), data.features, data.bad)
    corpus = Corpus(data.features, texts, twins)
    captions, pool = retrieval_pool(corpus, num_images, caption_kinds=None)
    scores = retrieval_scores(model, corpus, data.tokenizer, captions, pool, options.mode, batch_size, desc)
    images = scores.argsort(dim=1, descending=True, stable=True)[:, :top_k].tolist()
    texts_ranked = scores.t().argsort(dim=1, descending=True, stable=True)[:, :top_k].tolist()
    return {"images": pool,
            "text_to_image": [{"image_id": c.image_id, "caption": c.text, "ranked_image_ids": [pool[i] for i in row]}
                              for c, row in zip(captions, images)],
            "image_to_text": [{"image_id": image_id, "ranked_captions": row}
                              for image_id, row in zip(pool, texts_ranked)]}


def predict_nlvr2(model, options: FinetuneOptions, data: TaskData, split: str, batch_size: int = 128,
                  desc: str | None = None) -> list[dict]:
    """True or False for every statement of the split (NLVR2's label strings), labelled or not."""
    path = _split_file(data, f"nlvr2_{split}.json")
    pairs = read_nlvr2(path, data.features, data.bad, labelled=False)
    if not pairs:
        raise ValueError(f"{path}: no usable statement")
    logits, _ = run_model(model, PairedReasoningDataset(pairs, data.features, data.tokenizer), options.mode,
                          batch_size, desc)
    return [{"identifier": pair.identifier, "prediction": "True" if label == 1 else "False"}
            for pair, label in zip(pairs, logits.argmax(-1).tolist())]


def run_predict(task: str, model_dir, data_folder, split: str, out, vocab, batch_size: int = 128,
                num_images: int = 100, top_k: int = 10, feature_format: str | None = None, bad=None,
                device="cpu", progress: bool = True, feature_files: list[str] | None = None) -> int:
    """Loads a `semvlp finetune` output folder, writes the predictions of `task` on the data folder's `split` to
    `out` (JSON) and returns how many queries (questions, captions, statements) it answered. `feature_files`
    (paths or globs) replace the data folder's own feature files, as `--features` does."""
    model, options = load_finetuned(model_dir, device)
    check_model_task(task, options, model_dir)
    data = TaskData(data_folder, tokenizer_for(model.config, vocab), model.config.visual_feat_dim, feature_format,
                    bad, feature_files)
    desc = f"predict {task} {split}" if progress else None
    if task == "vqa":
        result = predict_vqa(model, options, data, split, batch_size, desc)
    elif task == "nlvr2":
        result = predict_nlvr2(model, options, data, split, batch_size, desc)
    else:
        result = predict_retrieval(model, options, data, split, num_images, top_k, max(batch_size, 256), desc)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result) + "\n")
    return len(result["text_to_image"]) if task == "retrieval" else len(result)
