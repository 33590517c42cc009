"""`semvlp predict` on tiny fine-tuned models: VQA answers from a questions file without annotations, retrieval
rankings in both directions, NLVR2 true/false (from statements with or without labels), each equal to what the
model scores; a model of another task is refused, and evaluation still needs the labels."""

import json

import pytest

from semvlp.cli import main
from semvlp.data.corpus import Corpus, load_corpus, load_pairs
from semvlp.data.dataset import AnswerVocab
from semvlp.data.formats import open_features, read_coco_captions
from semvlp.data.task_datasets import PairedReasoningDataset, QuestionAnsweringDataset
from semvlp.data.tokenizer import WordPieceTokenizer
from semvlp.eval.task_eval import retrieval_pool, retrieval_scores, run_model
from semvlp.finetune.loop import load_finetuned


def _predict(folder, model, task, out, split="test", *extra):
    return main(["predict", "--task", task, "--model", str(model), "--data", str(folder), "--split", split,
                 "--vocab", str(folder / "vocab" / "vocab.txt"), "--out", str(out), *extra])


def _tokenizer(folder, model):
    return WordPieceTokenizer(folder / "vocab" / "vocab.txt", max_length=model.config.max_position_embeddings)


def test_vqa_predictions_from_questions_alone(coco_data, finetuned, tmp_path):
    folder, _ = coco_data
    assert not (folder / "vqa_annotations_test.json").exists()
    assert _predict(folder, finetuned("qa"), "vqa", tmp_path / "test.json") == 0
    predictions = json.loads((tmp_path / "test.json").read_text())
    questions = json.loads((folder / "vqa_questions_test.json").read_text())["questions"]
    assert [p["question_id"] for p in predictions] == [q["question_id"] for q in questions]
    assert all(isinstance(p["question_id"], int) for p in predictions)
    # On a split with answers, the predictions are the model's best answers, question by question.
    assert _predict(folder, finetuned("qa"), "vqa", tmp_path / "val.json", "val") == 0
    model, options = load_finetuned(finetuned("qa"))
    dataset = QuestionAnsweringDataset(load_corpus(folder, "val"), _tokenizer(folder, model),
                                       AnswerVocab(options.answers))
    best = run_model(model, dataset, options.mode)[0].argmax(-1).tolist()
    assert [p["answer"] for p in json.loads((tmp_path / "val.json").read_text())] == [options.answers[i] for i in best]


def test_retrieval_rankings_follow_the_scores(coco_data, finetuned, tmp_path):
    folder, _ = coco_data
    assert _predict(folder, finetuned("itm"), "retrieval", tmp_path / "r.json", "test", "--retrieval-images", "8",
                    "--top-k", "5") == 0
    result = json.loads((tmp_path / "r.json").read_text())
    model, options = load_finetuned(finetuned("itm"))
    features = open_features(folder)
    # The test split's questions have no annotations, so its captions are read alone.
    corpus = Corpus(features, read_coco_captions(folder / "captions_test.json", features)[0])
    captions, pool = retrieval_pool(corpus, 8, None)
    scores = retrieval_scores(model, corpus, _tokenizer(folder, model), captions, pool, options.mode)
    assert result["images"] == pool and len(pool) == 8
    assert [(e["image_id"], e["caption"]) for e in result["text_to_image"]] == [(c.image_id, c.text) for c in captions]
    for row, entry in zip(scores, result["text_to_image"]):
        assert entry["ranked_image_ids"] == [pool[i] for i in row.argsort(descending=True, stable=True)[:5]]
    for column, entry in zip(scores.t(), result["image_to_text"]):
        assert entry["ranked_captions"] == column.argsort(descending=True, stable=True)[:5].tolist()


def _unlabelled(folder, tmp_path):
    """A data folder with the features of `folder` and its NLVR2 test statements without their labels."""
    data = tmp_path / "unlabelled"
    data.mkdir()
    (data / "features.tsv").symlink_to(folder / "features.tsv")
    statements = json.loads((folder / "nlvr2_test.json").read_text())
    for statement in statements:
        del statement["label"]
    (data / "nlvr2_test.json").write_text(json.dumps(statements))
    return data


def test_nlvr2_predictions_with_and_without_labels(coco_data, finetuned, tmp_path):
    folder, _ = coco_data
    assert _predict(folder, finetuned("nlvr2"), "nlvr2", tmp_path / "n.json") == 0
    predictions = json.loads((tmp_path / "n.json").read_text())
    model, options = load_finetuned(finetuned("nlvr2"))
    features = open_features(folder)
    pairs = load_pairs(folder, "test", features)
    labels = run_model(model, PairedReasoningDataset(pairs, features, _tokenizer(folder, model)),
                       options.mode)[0].argmax(-1).tolist()
    assert predictions == [{"identifier": p.identifier, "prediction": "True" if y else "False"}
                           for p, y in zip(pairs, labels)]
    # The same statements without labels (as NLVR2's unreleased test split comes) get the same predictions.
    unlabelled = _unlabelled(folder, tmp_path)
    assert main(["predict", "--task", "nlvr2", "--model", str(finetuned("nlvr2")), "--data", str(unlabelled),
                 "--vocab", str(folder / "vocab" / "vocab.txt"), "--out", str(tmp_path / "u.json")]) == 0
    assert json.loads((tmp_path / "u.json").read_text()) == predictions


def test_evaluation_still_needs_the_labels(coco_data, finetuned, tmp_path, capsys):
    folder, _ = coco_data
    unlabelled = _unlabelled(folder, tmp_path)
    assert main(["eval", "--model", str(finetuned("nlvr2")), "--data", str(unlabelled), "--splits", "test",
                 "--vocab", str(folder / "vocab" / "vocab.txt")]) == 2
    err = capsys.readouterr().err
    assert "nlvr2_test.json: statement 0 (" in err and "expected 0, 1, 'True' or 'False', got None" in err


@pytest.mark.parametrize("task,message", [("vqa", "--task vqa needs a model fine-tuned with --task qa"),
                                          ("nlvr2", "--task nlvr2 needs a model fine-tuned with --task nlvr2")])
def test_a_model_of_another_task_is_refused(coco_data, finetuned, tmp_path, capsys, task, message):
    folder, _ = coco_data
    assert _predict(folder, finetuned("itm"), task, tmp_path / "x.json") == 2
    assert message in capsys.readouterr().err and not (tmp_path / "x.json").exists()
