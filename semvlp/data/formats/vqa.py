"""VQA questions and annotations JSON (the VQA v2 layout):
questions {"questions": [{"question_id", "image_id", "question"}]},
annotations {"annotations": [{"question_id", "image_id", "multiple_choice_answer", "answers": [{"answer",
"answer_confidence", "answer_id"}], "answer_type", "question_type"}]}.
The synthetic generator adds "semvlp_category" (attribute, existence, count, relation, comparison); without it
a question's category is its "answer_type".
"""

from __future__ import annotations

import json

from ..records import BadRecords, TextRecord
from .jsonfile import image_and_text, load_json


def read_vqa(questions_path, annotations_path, image_ids, bad: BadRecords | None = None) -> list[TextRecord]:
    """Questions of the images in `image_ids` with their most common answer and all human answers."""
    bad = bad or BadRecords()
    questions = load_json(questions_path, ("questions",))["questions"]
    answers = {}
    for index, ann in enumerate(load_json(annotations_path, ("annotations",))["annotations"]):
        qid = ann.get("question_id") if isinstance(ann, dict) else None
        answer = ann.get("multiple_choice_answer") if isinstance(ann, dict) else None
        if not answer and isinstance(ann, dict) and ann.get("answers"):
            answer = ann["answers"][0].get("answer")
        if qid is None or not isinstance(answer, str) or not answer.strip():
            bad.report(annotations_path, f"annotation {index}", "missing answer",
                       "the annotation has no question_id or no answer")
            continue
        human = tuple(a["answer"].strip() for a in ann.get("answers") or ()
                      if isinstance(a, dict) and isinstance(a.get("answer"), str) and a["answer"].strip())
        category = ann.get("semvlp_category") or ann.get("answer_type")
        answers[qid] = (answer.strip(), human or (answer.strip(),), category)
    out = []
    for index, q in enumerate(questions):
        has_id = isinstance(q, dict) and "question_id" in q
        name = f"question {index}" + (f" (question_id {q['question_id']})" if has_id else "")
        checked = image_and_text(q, image_ids, "question", "question", bad, questions_path, name)
        if checked is None:
            continue
        image_id, text = checked
        if q.get("question_id") not in answers:
            bad.report(questions_path, name, "missing answer", "no annotation answers this question")
            continue
        answer, human, category = answers[q["question_id"]]
        out.append(TextRecord(image_id, text, "question", answer=answer, category=category, answers=human))
    return out


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
