"""VQA accuracy: the mean consensus score of predictions over human answers, overall and per question type."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from ..data.answers import vqa_score


def vqa_accuracy(predictions: Iterable[str], human_answers: Iterable[Sequence[str]],
                 question_types: Iterable[str] | None = None) -> dict[str, float]:
    """Mean VQA score overall ("overall") and per question type (keys "type/<name>")."""
    predictions, human_answers = list(predictions), list(human_answers)
    if len(predictions) != len(human_answers):
        raise ValueError(f"human_answers: expected {len(predictions)} entries (one per prediction), "
                         f"got {len(human_answers)}")
    if not predictions:
        raise ValueError("predictions: expected at least one prediction, got none")
    types = list(question_types) if question_types is not None else [None] * len(predictions)
    if len(types) != len(predictions):
        raise ValueError(f"question_types: expected {len(predictions)} entries, got {len(types)}")
    per_type = defaultdict(list)
    scores = []
    for prediction, answers, qtype in zip(predictions, human_answers, types):
        score = vqa_score(prediction, answers)
        scores.append(score)
        if qtype is not None:
            per_type[qtype].append(score)
    result = {"overall": sum(scores) / len(scores)}
    result.update({f"type/{t}": sum(s) / len(s) for t, s in sorted(per_type.items())})
    return result
