"""Every command a user runs, on data in the layouts real datasets come in (tests/fixtures/real_format: LXMERT TSVs
with COCO_<split>_<12 digits> and NLVR2 ids, COCO captions and VQA JSON with integer ids, a test split of VQA
questions without annotations and NLVR2 statements without labels): a vocab, pretraining with an export,
fine-tuning of each task from it, evaluation and predictions. The predictions name the fixture's own ids, one per
question or statement, none skipped."""

import json
import shutil
from pathlib import Path

import pytest
from pretrain_runs import pretrain_args, run

from semvlp.cli import main
from semvlp.data.formats.image_ids import canonical_image_id

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "real_format"
TASKS = ("qa", "itm", "nlvr2")


def _json(path: Path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A copy of the fixture (opening a data folder writes indexes and token caches beside its files)."""
    folder = tmp_path_factory.mktemp("real_format") / "data"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return folder


@pytest.fixture(scope="module")
def vocab(data, tmp_path_factory) -> Path:
    """A WordPiece vocab of the training captions and questions (`semvlp data vocab`)."""
    out = tmp_path_factory.mktemp("vocab")
    assert main(["data", "vocab", "--corpus", str(data / "captions_train.json"), str(data / "vqa_questions_train.json"),
                 "--out", str(out), "--vocab-size", "200"]) == 0
    return out / "vocab.txt"


@pytest.fixture(scope="module")
def finetuned(data, vocab, tmp_path_factory) -> dict[str, Path]:
    """task -> `semvlp finetune` output, each fine-tuned from a three-step pretraining of the tiny preset."""
    runs = tmp_path_factory.mktemp("runs")
    run("plain", 1, pretrain_args(data, "tiny", "zero0_fp32", runs / "pretrain", 3, 1, "--vocab", str(vocab),
                                  "--export", "--precision", "fp32"))
    export = runs / "pretrain" / "export"
    out = {}
    for task in TASKS:
        out[task] = runs / task
        assert main(["finetune", "--task", task, "--data", str(data), "--init", str(export), "--output",
                     str(out[task]), "--steps", "2", "--batch-size", "4", "--warmup-steps", "1", "--eval-splits", "val",
                     "--retrieval-images", "10", "--precision", "fp32"]) == 0
    return out


def test_the_fixture_is_in_the_real_id_styles():
    rows = [line.split("\t") for line in (FIXTURE / "features_train2014.tsv").read_text().splitlines()]
    assert all(len(row) == 10 and row[0].startswith("COCO_train2014_") for row in rows)
    captions = _json(FIXTURE / "captions_train.json")
    assert all(type(a["id"]) is int and type(a["image_id"]) is int and set(a) == {"id", "image_id", "caption"}
               for a in captions["annotations"])
    assert not (FIXTURE / "vqa_annotations_test.json").exists()
    assert all("label" not in s for s in _json(FIXTURE / "nlvr2_test.json"))


@pytest.mark.parametrize("task", TASKS)
def test_finetune_and_eval_report_every_metric_in_range(finetuned, data, vocab, task, tmp_path):
    assert set(_json(finetuned[task] / "results.json")) == {"val"}
    assert main(["eval", "--model", str(finetuned[task]), "--data", str(data), "--splits", "val", "--vocab", str(vocab),
                 "--precision", "fp32", "--out", str(tmp_path / "eval.json")]) == 0
    results = _json(tmp_path / "eval.json")["val"]
    assert "accuracy" in results and all(0.0 <= value <= 1.0 for value in results.values())
    if task == "itm":
        assert {"text_to_image/R@10", "image_to_text/R@10"} <= set(results)


def _predict(task: str, model: Path, data: Path, vocab: Path, out: Path, capsys, queries: int):
    """The predictions of `task` on the test split; the command reports answering every one of `queries`."""
    capsys.readouterr()
    assert main(["predict", "--task", task, "--model", str(model), "--data", str(data), "--split", "test",
                 "--vocab", str(vocab), "--out", str(out)]) == 0
    assert f"predictions for {queries} test queries" in capsys.readouterr().out
    return _json(out)


def test_vqa_predictions_answer_every_test_question(finetuned, data, vocab, tmp_path, capsys):
    questions = _json(FIXTURE / "vqa_questions_test.json")["questions"]
    predictions = _predict("vqa", finetuned["qa"], data, vocab, tmp_path / "vqa.json", capsys, len(questions))
    assert [p["question_id"] for p in predictions] == [q["question_id"] for q in questions]
    answers = _json(finetuned["qa"] / "finetune.json")["answers"]
    assert all(set(p) == {"question_id", "answer"} and p["answer"] in answers for p in predictions)


def test_retrieval_predictions_rank_the_test_images_by_their_coco_ids(finetuned, data, vocab, tmp_path, capsys):
    captions = _json(FIXTURE / "captions_test.json")
    result = _predict("retrieval", finetuned["itm"], data, vocab, tmp_path / "retrieval.json", capsys,
                      len(captions["annotations"]))
    coco_ids = {str(image["id"]) for image in captions["images"]}
    tsv_ids = {canonical_image_id(line.split("\t")[0])
               for line in (FIXTURE / "features_val2014.tsv").read_text().splitlines()}
    assert set(result["images"]) == coco_ids and coco_ids <= tsv_ids
    assert [(e["image_id"], e["caption"]) for e in result["text_to_image"]] == [
        (str(a["image_id"]), a["caption"].strip()) for a in captions["annotations"]]
    assert all(sorted(e["ranked_image_ids"]) == sorted(coco_ids) for e in result["text_to_image"])
    assert [e["image_id"] for e in result["image_to_text"]] == result["images"]
    assert all(len(set(e["ranked_captions"])) == len(e["ranked_captions"]) == 10 for e in result["image_to_text"])


def test_nlvr2_predictions_for_unlabelled_statements(finetuned, data, vocab, tmp_path, capsys):
    statements = _json(FIXTURE / "nlvr2_test.json")
    predictions = _predict("nlvr2", finetuned["nlvr2"], data, vocab, tmp_path / "nlvr2.json", capsys, len(statements))
    assert [p["identifier"] for p in predictions] == [s["identifier"] for s in statements]
    assert all(set(p) == {"identifier", "prediction"} and p["prediction"] in ("True", "False") for p in predictions)
