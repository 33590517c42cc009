"""VQA answers: the rules of the official VQA evaluation (answer processing and the consensus score of a prediction
against the human answers) and the soft targets the QA classifier trains on (`semvlp.eval.vqa` averages the
scores).

The official evaluation compares a prediction with each human answer after stripping whitespace. Only when the
humans disagree (more than one distinct answer) are the human answers and the prediction processed: punctuation
(`process_punctuation`), then lower case, number words to digits, articles dropped and missing apostrophes put back
(`process_digits_articles`). When all humans agree, the strings are compared as they are.
"""

from __future__ import annotations

import re
from typing import Sequence

# Number words the evaluation writes as digits ("none" counts as zero), and the articles it drops: the script's
# lists.
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
# Contractions written without their apostrophe, and how the evaluation writes them. This follows the official
# evaluation script's table (vqaEval.py of the VQA API, GT-Vision-Lab/VQA) entry for entry, all 120 of them, odd
# ones included ("somebody'd" -> "somebodyd"), since every score must be the script's. The keys with capitals
# ("Im", "Ive", "Id've", "I'dve") never match, since words are lower-cased before the lookup.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
# The evaluation's punctuation list: no period (handled below), apostrophe, colon, or any of *#%^&$.
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                "?", "!")
# A period is removed unless a digit follows it ("2.5" stays). The evaluation's pattern also carries a look-ahead
# meant as a look-behind for a digit; at a period it always holds, so this is the rule it applies.
_PERIOD = re.compile(r"\.(?!\d)")
# The evaluation passes re.UNICODE (32) where `re.sub` takes its count: at most 32 periods are removed.
_MAX_PERIODS = 32
# A comma between digits ("1,000") anywhere in the answer makes every punctuation mark vanish instead of spacing.
_DIGIT_COMMA = re.compile(r"\d,\d")


def process_punctuation(text: str) -> str:
    """A punctuation mark is removed when it has a space on either side somewhere in the answer, or when the
    answer holds a comma between digits; otherwise it becomes a space. Then periods not before a digit go."""
    digit_comma = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS)


def process_digits_articles(text: str) -> str:
    """Lower case; number words become digits; articles go; contractions get their apostrophe; single spaces."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def _strip(answer: str) -> str:
    return answer.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """The evaluation's full processing of one answer (the form the answer vocabulary is kept in)."""
    return process_digits_articles(process_punctuation(_strip(answer)))


def _consensus(prediction: str, human_answers: Sequence[str]) -> float:
    """min(#other humans who gave the prediction / 3, 1), averaged over leaving out each human in turn (for ten
    humans, k matches score 0, 0.3, 0.6, 0.9, 1 for k = 0, 1, 2, 3, 4+)."""
    total = sum(answer == prediction for answer in human_answers)
    return sum(min(1.0, (total - (answer == prediction)) / 3.0) for answer in human_answers) / len(human_answers)


def vqa_score(prediction: str, human_answers: Sequence[str]) -> float:
    """Accuracy of one prediction by the official evaluation's rules (see the module docstring).

    With a single human answer (not VQA's layout, where the official rule would always give 0) the score is an
    exact match after full processing.
    """
    if not human_answers:
        raise ValueError("human_answers: expected at least one answer, got none")
    if len(human_answers) == 1:
        return float(normalize_answer(prediction) == normalize_answer(human_answers[0]))
    humans = [_strip(a) for a in human_answers]
    prediction = _strip(prediction)
    if len(set(humans)) > 1:
        humans = [normalize_answer(a) for a in humans]
        prediction = normalize_answer(prediction)
    return _consensus(prediction, humans)


def soft_scores(human_answers: Sequence[str], answer_to_index: dict[str, int]) -> dict[int, float]:
    """Training targets for the BCE classifier, by processed answer (`answer_to_index` is keyed by processed
    answers): each answer in the vocabulary gets the consensus score of the processed human answers. Unlike the
    evaluation, the humans' answers are processed even when they agree, so that "two" ten times trains "2"."""
    if not human_answers:
        raise ValueError("human_answers: expected at least one answer, got none")
    normalized = [normalize_answer(a) for a in human_answers]
    if len(normalized) == 1:
        return {answer_to_index[normalized[0]]: 1.0} if normalized[0] in answer_to_index else {}
    return {answer_to_index[a]: _consensus(a, normalized) for a in set(normalized) if a in answer_to_index}
