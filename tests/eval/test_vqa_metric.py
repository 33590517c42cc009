"""VQA accuracy by the official evaluation's rules (answer processing, agreement, leave-one-out consensus) against
hand-computed cases, and the soft targets."""

from itertools import combinations

import pytest

from semvlp.data.answers import _CONTRACTIONS, process_digits_articles, process_punctuation
from semvlp.eval import normalize_answer, soft_scores, vqa_accuracy, vqa_score


@pytest.mark.parametrize("raw,processed", [
    ("yes.", "yes"),                        # a period not before a digit goes
    ("3.5", "3.5"),                         # a period before a digit stays
    (".5", ".5"),
    ("u.s.", "us"),
    ("1,000", "1000"),                      # a comma between digits: every mark is removed
    ("2,000/year", "2000year"),             # ... the slash too, not spaced
    ("black/white", "black white"),         # a mark inside a word becomes a space
    ("left-side", "left side"),
    ("apples, oranges", "apples oranges"),  # a mark next to a space is removed
    ("hi - there", "hi there"),
    ("x?", "x"),
    ("what: now", "what: now"),             # a colon is not among the evaluation's marks
    ("a*b", "a*b"),                          # nor is an asterisk
    ("Two Dogs", "2 dogs"),                 # lower case, number words
    ("none", "0"),
    ("ten", "10"),
    ("eleven", "eleven"),                   # only zero..ten (and none) are mapped
    ("  The Dog. ", "dog"),                 # articles go
    ("an apple, a pear", "apple pear"),
    ("dont know", "don't know"),            # contractions get their apostrophe
    ("whats that", "what's that"),
    ("youll see", "you'll see"),
    ("couldnt've", "couldn't've"),
    ("Im", "im"),                           # the table's "Im" never matches: words are lower-cased first
    ("its", "its"),                         # not in the table
    ("somebody'd", "somebodyd"),            # the table maps it this way round
    ("ow's'at", "'ow's'at"),                # keys with apostrophes are matched as they are
    ("'ows'at", "'ow's'at"),
    ("twas", "'twas"),
    ("yall'll", "y'all'll"),
    ("y'alld've", "y'all'd've"),
    ("maam", "ma'am"),
    ("oclock", "o'clock"),
    ("let's", "let's"),
    ("Ive", "ive"),                         # like "Im"
    ("dont?", "don't"),                     # the lookup follows punctuation processing
    ("3.", "3"),                            # the period after a digit goes too: the script's look-behind is none
    ("5.5.", "5.5"),
    ("no. 5", "no 5"),
    ("a one", "1"),                         # number words are mapped before articles are dropped
    ("twenty-one", "twenty 1"),             # the hyphen becomes a space, then "one" is a number word
])
def test_normalisation_follows_the_official_rules(raw, processed):
    assert normalize_answer(raw) == processed


# The script's punctuation list, in its order.
OFFICIAL_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                        "?", "!"]


@pytest.mark.parametrize("mark", OFFICIAL_PUNCTUATION)
def test_every_mark_of_the_official_list_is_processed(mark):
    assert process_punctuation(f"x{mark}y") == "x y"
    assert process_punctuation(f"x {mark}y") == "x y"
    assert process_punctuation(f"1,0{mark}y") == "10y"


@pytest.mark.parametrize("mark", [":", "'", "*", "#", "%", "^", "&", "$", "~", "|"])
def test_marks_outside_the_official_list_stay(mark):
    assert process_punctuation(f"x{mark}y") == f"x{mark}y"


def test_the_contractions_table_is_the_official_size():
    # The script's table has 120 entries; a missing or extra one changes this count.
    assert len(_CONTRACTIONS) == 120
    assert sum(key != key.lower() for key in _CONTRACTIONS) == 4  # "Id've", "I'dve", "Im", "Ive"


def test_empty_human_answers_count_in_the_average():
    # Three humans say yes, seven gave nothing: each empty answer left out leaves three matches (1), each yes
    # left out two (2/3): (3 * 2/3 + 7) / 10.
    assert vqa_score("yes", ["yes"] * 3 + [""] * 7) == pytest.approx(0.9)


def test_punctuation_is_removed_when_spaced_anywhere_in_the_answer():
    # The rule looks at the whole answer: a "-" next to a space somewhere removes every "-".
    assert process_punctuation("a-b - c") == "ab  c"
    assert process_punctuation("a-b c") == "a b c"


def test_at_most_32_periods_are_removed():
    # The evaluation hands re.UNICODE (32) to re.sub as its count.
    assert process_punctuation("a." * 33) == "a" * 33 + "."


def test_digits_and_articles_work_on_words():
    assert process_digits_articles("The  THREE\tcats") == "3 cats"
    assert process_digits_articles("a") == ""


def _brute_force(matches: int, humans: int = 10) -> float:
    """Mean over every subset of humans - 1 humans of min(matches in the subset / 3, 1)."""
    answers = [True] * matches + [False] * (humans - matches)
    subsets = list(combinations(range(humans), humans - 1))
    return sum(min(1.0, sum(answers[i] for i in s) / 3) for s in subsets) / len(subsets)


@pytest.mark.parametrize("matches,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_consensus(matches, expected):
    humans = ["2"] * matches + ["3"] * (10 - matches)
    if matches == 10:
        humans[0] = "4"  # keep the humans disagreeing; 9 matches still give 1
    assert vqa_score("2", humans) == pytest.approx(expected)
    assert vqa_score("2", humans) == pytest.approx(_brute_force(humans.count("2")))


def test_agreeing_humans_are_compared_unprocessed():
    assert vqa_score("two", ["two"] * 10) == 1.0
    assert vqa_score("2", ["two"] * 10) == 0.0          # no number-word mapping when all agree
    assert vqa_score("Yes", ["yes"] * 10) == 0.0         # nor lower case
    assert vqa_score(" yes\n", ["yes"] * 10) == 1.0      # whitespace is always stripped
    assert vqa_score("yes", ["yes "] * 10) == 1.0


def test_disagreeing_humans_and_the_prediction_are_processed():
    assert vqa_score("Two.", ["2"] * 9 + ["3"]) == 1.0
    humans = ["2"] * 2 + ["two"] + ["3"] * 7  # three humans say 2 after processing
    assert vqa_score("two", humans) == pytest.approx(0.9)


def test_single_answer_is_exact_match_after_processing():
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
    with pytest.raises(ValueError, match="human_answers: expected at least one answer"):
        soft_scores([], {"a": 0})


def test_soft_scores_for_bce_targets():
    vocab = {"2": 0, "3": 1, "4": 2}
    scores = soft_scores(["two"] * 2 + ["3"] * 8, vocab)
    assert scores == {0: pytest.approx(0.6), 1: pytest.approx(1.0)}
    # Targets are by processed answer even when the humans agree.
    assert soft_scores(["two"] * 10, vocab) == {0: 1.0}
    assert soft_scores(["Three"], vocab) == {1: 1.0}
