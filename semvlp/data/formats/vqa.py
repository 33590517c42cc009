"""VQA questions and annotations JSON (the VQA v2 layout):
questions {"questions": [{"question_id", "image_id", "question"}]},
annotations {"annotations": [{"question_id", "image_id", "multiple_choice_answer", "answers": [{"answer",
"answer_confidence", "answer_id"}], "answer_type", "question_type"}]}.
The synthetic generator adds "semvlp_category" (attribute, existence, count, relation, comparison); without it
a question's category is its "answer_type". A questions file is read alone (no annotations, as for a test split
whose answers are withheld) with `read_vqa_questions`, which keeps each question's id for predictions.
"""

from __future__ import annotations

import dataclasses
import json

from ..records import BadRecords, TextRecord
from .jsonfile import image_and_text, json_list, load_json
from .store import BadRecordFormat


def read_vqa(questions_path, annotations_path, image_ids, bad: BadRecords | None = None) -> list[TextRecord]:
    """Questions of the images in `image_ids` with their most common answer and all human answers; with
    `annotations_path` None, the questions alone (no answers)."""
    bad = bad or BadRecords()
    questions = json_list(load_json(questions_path, ("questions",)), "questions", questions_path)
    answers = _read_answers(annotations_path, bad) if annotations_path is not None else None
    out = []
    for question_id, record, name in _questions(questions, questions_path, image_ids, bad):
        if answers is None:
            out.append(record)
        elif question_id not in answers:
            bad.report(questions_path, name, "missing answer", "no annotation answers this question")
        else:
            answer, human, category = answers[question_id]
            out.append(dataclasses.replace(record, answer=answer, category=category, answers=human))
    return out


def read_vqa_questions(questions_path, image_ids, bad: BadRecords | None = None) -> list[tuple[object, TextRecord]]:
    """(question_id as in the file, record without answer) of every question about an image in `image_ids`; a
    question without a question_id is a bad record."""
    bad = bad or BadRecords()
    questions = json_list(load_json(questions_path, ("questions",)), "questions", questions_path)
    out = []
    for question_id, record, name in _questions(questions, questions_path, image_ids, bad):
        if question_id is None:
            bad.report(questions_path, name, "missing question id", "the question has no question_id")
            continue
        out.append((question_id, record))
    return out


def _questions(questions: list, path, image_ids, bad: BadRecords):
    """(question_id or None, record without answer, the record's name for errors) of every usable question."""
    for index, q in enumerate(questions):
        has_id = isinstance(q, dict) and "question_id" in q
        name = f"question {index}" + (f" (question_id {q['question_id']})" if has_id else "")
        if has_id and not _is_question_id(q["question_id"]):
            bad.report(path, name, "wrong question id type", f"question_id {q['question_id']!r} is not an int or "
                       "a string")
            continue
        checked = image_and_text(q, image_ids, "question", "question", bad, path, name)
        if checked is not None:
            yield q.get("question_id"), TextRecord(checked[0], checked[1], "question"), name


def _is_question_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _read_answers(path, bad: BadRecords) -> dict:
    """question_id -> (most common answer, every human answer, category)."""
    answers = {}
    for index, ann in enumerate(json_list(load_json(path, ("annotations",)), "annotations", path)):
        qid = ann.get("question_id") if isinstance(ann, dict) else None
        name = f"annotation {index}" + (f" (question_id {qid})" if qid is not None else "")
        try:
            read = _answer(ann)
        except BadRecordFormat as err:
            bad.report(path, name, err.kind, str(err))
            continue
        if qid in answers:
            bad.report(path, name, "duplicate question id", f"question_id {qid!r} is answered twice")
            continue
        answers[qid] = read
    return answers


def _answer(ann) -> tuple[str, tuple[str, ...], str | None]:
    """(most common answer, every human answer, category) of an annotation; BadRecordFormat when it has none or
    a value of the wrong type."""
    if not isinstance(ann, dict) or ann.get("question_id") is None:
        raise BadRecordFormat("missing answer", "the annotation has no question_id or no answer")
    if not _is_question_id(ann["question_id"]):
        raise BadRecordFormat("wrong question id type", f"question_id {ann['question_id']!r} is not an int or a string")
    chosen, human = ann.get("multiple_choice_answer"), ann.get("answers") or []
    if chosen is not None and not isinstance(chosen, str):
        raise BadRecordFormat("wrong answer type", f"multiple_choice_answer {chosen!r} is not a string")
    if not isinstance(human, list):
        raise BadRecordFormat("wrong answer type", f"answers: expected a list, got {type(human).__name__}")
    for k, item in enumerate(human):
        if not isinstance(item, dict) or not isinstance(item.get("answer"), str):
            raise BadRecordFormat("wrong answer type", f"answers[{k}]: expected {{\"answer\": string, ...}}, "
                                  f"got {item!r}")
    category = ann.get("semvlp_category") or ann.get("answer_type")
    if category is not None and not isinstance(category, str):
        raise BadRecordFormat("wrong answer type", f"the answer type {category!r} is not a string")
    # Every human answer counts, an empty one too: the official score averages over all of them.
    human = tuple(a["answer"].strip() for a in human)
    answer = chosen.strip() if chosen and chosen.strip() else next((h for h in human if h), None)
    if answer is None:
        raise BadRecordFormat("missing answer", "the annotation has no question_id or no answer")
    return answer, human or (answer,), category


_ANSWER_TYPES = {"existence": "yes/no", "relation": "yes/no", "comparison": "yes/no", "count": "number"}


def write_vqa(questions_path, annotations_path, items: list[dict], human_answers: int = 10) -> None:
    """items: [{"image_id", "question", "answer", "category"}], optionally "answer_type"; question ids are their
    indices. Each question gets `human_answers` copies of its answer (VQA has ten; one makes the score an exact
    match)."""
    questions = [{"question_id": i, "image_id": it["image_id"], "question": it["question"]}
                 for i, it in enumerate(items)]
    annotations = [{"question_id": i, "image_id": it["image_id"], "multiple_choice_answer": it["answer"],
                    "answers": [{"answer": it["answer"], "answer_confidence": "yes", "answer_id": k}
                                for k in range(1, human_answers + 1)],
                    "answer_type": it.get("answer_type", _ANSWER_TYPES.get(it["category"], "other")),
                    "question_type": it["category"],
                    "semvlp_category": it["category"]} for i, it in enumerate(items)]
    with open(questions_path, "w", encoding="utf-8") as f:
        json.dump({"questions": questions}, f)
    with open(annotations_path, "w", encoding="utf-8") as f:
        json.dump({"annotations": annotations}, f)
