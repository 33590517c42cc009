"""VQA answers: the official evaluation's answer normalisation, the consensus score of an answer against the human
answers, and the soft targets the QA classifier trains on (`semvlp.eval.vqa` averages the scores)."""

from __future__ import annotations

import re
from typing import Sequence

_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = {"dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't",
                 "wont": "won't", "wasnt": "wasn't", "werent": "weren't", "hasnt": "hasn't", "havent": "haven't",
                 "didnt": "didn't", "couldnt": "couldn't", "shouldnt": "shouldn't", "wouldnt": "wouldn't",
                 "im": "i'm", "ive": "i've", "youre": "you're", "theyre": "they're", "thats": "that's",
                 "whats": "what's", "its": "it's", "lets": "let's"}
_PUNCTUATION = set(";/[]\"{}()=+\\_-><@`,?!*#%^&$")
# A period is dropped unless a digit follows it (keeps "2.5").
_PERIOD = re.compile(r"\.(?!\d)")
# A comma between digits is a thousands separator ("1,000" -> "1000").
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")


def normalize_answer(answer: str) -> str:
    """The VQA evaluation's normalisation: lower case, punctuation, number words, articles, contractions."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _DIGIT_COMMA.sub(r"\1\3", text)
    for p in _PUNCTUATION:
        # Punctuation next to a space (or at an edge) disappears; inside a word it becomes a space.
        if f"{p} " in text or f" {p}" in text or text.startswith(p) or text.endswith(p):
            text = text.replace(p, "")
        else:
            text = text.replace(p, " ")
    text = _PERIOD.sub("", text)
    words = []
    for word in text.split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_score(prediction: str, human_answers: Sequence[str]) -> float:
    """Accuracy of one prediction.

    With several human answers: min(#humans who gave the prediction / 3, 1), averaged over the leave-one-out
    subsets of the humans as the official evaluation does (for 10 answers this turns 3 matches into 0.9).
    With a single answer: exact match after normalisation.
    """
    if not human_answers:
        raise ValueError("human_answers: expected at least one answer, got none")
    predicted = normalize_answer(prediction)
    matches = [normalize_answer(a) == predicted for a in human_answers]
    if len(matches) == 1:
        return float(matches[0])
    total = sum(matches)
    scores = [min(1.0, (total - m) / 3.0) for m in matches]
    return sum(scores) / len(scores)


def soft_scores(human_answers: Sequence[str], answer_to_index: dict[str, int]) -> dict[int, float]:
    """Training targets for the BCE classifier: each normalised answer in the vocabulary gets its VQA score."""
    normalized = [normalize_answer(a) for a in human_answers]
    return {answer_to_index[a]: vqa_score(a, human_answers) for a in set(normalized) if a in answer_to_index}
