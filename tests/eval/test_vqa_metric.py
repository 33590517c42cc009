"""VQA accuracy and normalisation against hand-computed cases."""

import pytest

from semvlp.eval import normalize_answer, soft_scores, vqa_accuracy, vqa_score


@pytest.mark.parametrize("raw,normalized", [
    ("Yes", "yes"),
    ("  The Dog. ", "dog"),
    ("two", "2"),
    ("a red ball!", "red ball"),
    ("1,000", "1000"),
    ("2.5", "2.5"),
    ("dont know", "don't know"),
    ("black/white", "black white"),
    ("left-side", "left side"),
    ("an apple, an orange", "apple orange"),
])
def test_normalisation(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_ten_human_answers_use_the_leave_one_out_average():
    humans = ["2"] * 3 + ["3"] * 7
    # Each of the 3 "2"-humans left out leaves 2 matches (2/3); each of the 7 others leaves 3 (capped 1).
    assert vqa_score("two", humans) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_score("3", humans) == pytest.approx(1.0)
    assert vqa_score("4", humans) == 0.0
    assert vqa_score("2", ["2"] + ["3"] * 9) == pytest.approx(9 * (1 / 3) / 10)


def test_single_answer_is_exact_match_after_normalisation():
    assert vqa_score("The Circle", ["circle"]) == 1.0
    assert vqa_score("circles", ["circle"]) == 0.0


def test_accuracy_overall_and_per_type():
    result = vqa_accuracy(["yes", "red", "2"], [["yes"], ["blue"], ["two"]], ["exist", "attr", "count"])
    assert result == {"overall": pytest.approx(2 / 3), "type/attr": 0.0, "type/count": 1.0, "type/exist": 1.0}


def test_mismatched_lengths_and_empty_answers_are_errors():
    with pytest.raises(ValueError, match="human_answers: expected 2 entries"):
        vqa_accuracy(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="human_answers: expected at least one answer"):
        vqa_score("a", [])


def test_soft_scores_for_bce_targets():
    vocab = {"2": 0, "3": 1, "4": 2}
    scores = soft_scores(["two"] * 2 + ["3"] * 8, vocab)
    assert scores == {0: pytest.approx(2 * (1 / 3) / 10 + 8 * (2 / 3) / 10), 1: pytest.approx(1.0)}
