"""A VQA questions file read without annotations: records without answers, question ids kept as the file has them,
a question without an id is a bad record."""

import json

import pytest

from semvlp.data.formats import read_vqa
from semvlp.data.formats.vqa import read_vqa_questions
from semvlp.data.records import BadRecordError, BadRecords


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "vqa_questions_test.json"
    path.write_text(json.dumps({"questions": [
        {"question_id": 458752000, "image_id": 458752, "question": "What is this photo taken looking through?"},
        {"question_id": "q-2", "image_id": 7, "question": "Is it raining?"},
        {"image_id": 7, "question": "Which way?"}]}))
    return path


def test_questions_are_read_alone_with_their_ids(questions):
    bad = BadRecords(skip=True)
    read = read_vqa_questions(questions, {"458752", "7"}, bad)
    assert [qid for qid, _ in read] == [458752000, "q-2"]
    assert [(r.image_id, r.text, r.answer, r.answers) for _, r in read] == [
        ("458752", "What is this photo taken looking through?", None, ()), ("7", "Is it raining?", None, ())]
    assert bad.total == 1 and "missing question id" in bad.summary()
    with pytest.raises(BadRecordError, match=r"question 2: the question has no question_id"):
        read_vqa_questions(questions, {"458752", "7"})


def test_read_vqa_without_annotations_gives_unanswered_questions(questions):
    records = read_vqa(questions, None, {"458752", "7"})
    assert len(records) == 3 and all(r.kind == "question" and r.answer is None for r in records)
