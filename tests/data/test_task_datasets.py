"""Downstream data: the synthetic test split and NLVR2-style statements in the real formats, the VQA reader's
human answers, question-only corpora, and the QA dataset's soft targets."""

import json
import re

import numpy as np
import pytest

from semvlp.data.corpus import load_corpus, load_pairs
from semvlp.data.dataset import AnswerVocab
from semvlp.data.formats import open_features, read_nlvr2, read_vqa, write_vqa
from semvlp.data.records import BadRecordError, BadRecords
from semvlp.data.synthetic import to_corpus, write_synthetic
from semvlp.data.synthetic.language import hard_negative_types
from semvlp.data.synthetic.scenes import COLOURS, SHAPES
from semvlp.data.task_datasets import PairedReasoningDataset, QuestionAnsweringDataset, answer_vocab, collate
from semvlp.data.tokenizer import WordPieceTokenizer, train_vocab

COUNTS = {"train": 24, "val": 6, "novel": 6, "test": 8}
_COLOURS = list(COLOURS)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    splits = write_synthetic(folder, COUNTS, seed=5)
    texts = [c.text for im in splits["train"] for c in im.captions] + [q.text for im in splits["train"]
                                                                       for q in im.questions]
    vocab = train_vocab(texts + ["both images contain neither only one the left right image has more than same "
                                 "number of"], folder / "vocab", vocab_size=200)
    return folder, splits, WordPieceTokenizer(vocab)


def test_test_split_is_written_and_read_like_the_others(written):
    folder, splits, _ = written
    corpus = load_corpus(folder, "test")
    assert corpus.texts == to_corpus(splits["test"]).texts
    ids = {t.image_id for t in corpus.texts}
    assert len(ids) == COUNTS["test"] and all(int(i) >= 30_000_000 for i in ids)
    questions = [t for t in corpus.texts if t.kind == "question"]
    assert questions and all(q.answers == (q.answer,) * 10 for q in questions)


def _objects(record):
    return {(_COLOURS[a], SHAPES[o]) for a, o in zip(record.attr_ids, record.object_ids)}


def _count(record, shape):
    return sum(SHAPES[o] == shape for o in record.object_ids)


def _truth(text, left, right):
    """An independent reading of each statement template."""
    if m := re.fullmatch(r"the (left|right) image has more (\w+)s than the (?:left|right) image", text):
        a, b = _count(left, m[2]), _count(right, m[2])
        return a > b if m[1] == "left" else b > a
    if m := re.fullmatch(r"the two images contain the same number of (\w+)s", text):
        return _count(left, m[1]) == _count(right, m[1])
    m = re.fullmatch(r"(both images|only one image|neither image|the left image|the right image) contains? an? "
                     r"(\w+) (\w+)", text)
    assert m, text
    in_left, in_right = ((m[2], m[3]) in _objects(r) for r in (left, right))
    return {"both images": in_left and in_right, "only one image": in_left != in_right,
            "neither image": not in_left and not in_right, "the left image": in_left,
            "the right image": in_right}[m[1]]


@pytest.mark.parametrize("split", ["train", "test"])
def test_paired_statements_are_labelled_by_the_scenes_and_balanced(written, split):
    folder, splits, _ = written
    features = open_features(folder)
    pairs = load_pairs(folder, split, features)
    assert len(pairs) == 2 * (COUNTS[split] // 2)
    assert sum(p.label for p in pairs) == len(pairs) // 2
    own = {im.record.image_id for im in splits[split]}
    for pair in pairs:
        assert pair.left_image_id != pair.right_image_id and {pair.left_image_id, pair.right_image_id} <= own
        assert _truth(pair.text, features[pair.left_image_id], features[pair.right_image_id]) == pair.label, pair


def test_paired_dataset_packs_the_statement_with_both_images(written):
    folder, _, tokenizer = written
    features = open_features(folder)
    dataset = PairedReasoningDataset(load_pairs(folder, "val", features), features, tokenizer)
    batch = collate([dataset[i] for i in range(3)], box_dim=5)
    assert batch.layout.batch_size == 6 and batch.targets.tolist() == [int(dataset.pairs[i].label) for i in range(3)]
    left = features[dataset.pairs[1].left_image_id].features
    start = int(batch.layout.region_cu_seqlens[2])
    assert np.array_equal(batch.region_features[start:start + len(left)].numpy(), left)
    text = batch.layout.text_cu_seqlens
    assert batch.input_ids[text[2]:text[3]].tolist() == batch.input_ids[text[3]:text[4]].tolist()


def test_nlvr2_bad_records_name_the_file_and_statement(tmp_path, written):
    folder, _, _ = written
    features = open_features(folder)
    some = features.ids()[:2]
    items = [{"identifier": "ok", "sent": "both images contain a red circle", "img0": some[0], "img1": some[1],
              "label": "True"},
             {"identifier": "gone", "sent": "x", "img0": some[0], "img1": "999", "label": 1},
             {"identifier": "bad-label", "sent": "x", "img0": some[0], "img1": some[1], "label": 2},
             {"identifier": "empty", "sent": " ", "img0": some[0], "img1": some[1], "label": 0}]
    path = tmp_path / "nlvr2_x.json"
    path.write_text(json.dumps(items))
    with pytest.raises(BadRecordError, match=r"nlvr2_x.json: statement 1 \(gone\): image ids \['999'\]"):
        read_nlvr2(path, features)
    bad = BadRecords(skip=True)
    pairs = read_nlvr2(path, features, bad)
    assert [p.identifier for p in pairs] == ["ok"] and pairs[0].label is True
    assert bad.total == 3 and "bad label" in bad.summary() and "empty statement" in bad.summary()


def test_vqa_reader_keeps_every_human_answer_and_the_answer_type(tmp_path):
    questions = {"questions": [{"question_id": 7, "image_id": 1, "question": "how many dogs?"}]}
    answers = ["2", "two", "2", "3", "2", "2", "2", "two", "2", "2"]
    annotations = {"annotations": [{"question_id": 7, "image_id": 1, "multiple_choice_answer": "2",
                                    "answers": [{"answer": a, "answer_id": i} for i, a in enumerate(answers)],
                                    "answer_type": "number", "question_type": "how many"}]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    [record] = read_vqa(tmp_path / "q.json", tmp_path / "a.json", {"1"})
    assert record.answer == "2" and record.answers == tuple(answers) and record.category == "number"


def test_question_only_split_and_soft_targets(tmp_path, written):
    folder, splits, tokenizer = written
    src = open_features(folder)
    image = splits["train"][0].record.image_id
    items = [{"image_id": int(image), "question": "how many circles are there?", "answer": "two", "category": "count"},
             {"image_id": int(image), "question": "is there a red circle?", "answer": "yes", "category": "existence"}]
    write_vqa(tmp_path / "vqa_questions_qa.json", tmp_path / "vqa_annotations_qa.json", items, human_answers=1)
    annotations = json.loads((tmp_path / "vqa_annotations_qa.json").read_text())
    annotations["annotations"][0]["answers"] = [{"answer": a} for a in ["2", "two", "3", "2", "1"]]
    (tmp_path / "vqa_annotations_qa.json").write_text(json.dumps(annotations))
    corpus = load_corpus(tmp_path, "qa", features=src)
    assert [t.kind for t in corpus.texts] == ["question", "question"]
    vocab = answer_vocab(corpus, 10)
    assert sorted(vocab.answers) == ["2", "yes"]  # "two" is normalised to "2"
    dataset = QuestionAnsweringDataset(corpus, tokenizer, AnswerVocab(["yes", "2", "3"]))
    # Leave-one-out over five humans: three say 2 (after normalisation), one 3, one 1.
    two = (3 * (2 / 3) + 2 * 1.0) / 5
    three = (1 * 0.0 + 4 * (1 / 3)) / 5
    np.testing.assert_allclose(dataset.targets[0], [0.0, two, three], rtol=1e-6)
    np.testing.assert_allclose(dataset.targets[1], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="expected .* in .* for the 'nope' split"):
        load_corpus(tmp_path, "nope", features=src)


def test_hard_negative_types_follow_the_generator():
    assert hard_negative_types("pair", 2) == ["binding", "colour"]
    assert hard_negative_types("pair", 1) == ["colour"]
    with pytest.raises(ValueError, match="kind: a 'count' caption with 2 hard negatives"):
        hard_negative_types("count", 2)
