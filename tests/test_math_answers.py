"""Scoring as the papers score (issue #16 §2): MATH answers through math-verify, where a string
comparison gets them wrong; numbers with commas, units, ``$`` and a tolerance; options given as text."""

from __future__ import annotations

import pytest

from reasoning.answers import answers_match, extract_answer, is_correct, normalize_answer
from reasoning.math_answers import extract_math, last_boxed, math_equal, normalize_math

# (prediction, gold): equal as mathematics, different as strings.
EQUIVALENT = [
    ("\\dfrac{1}{2}", "\\frac12"),
    ("0.5", "\\frac{1}{2}"),
    ("\\frac{2}{4}", "\\frac{1}{2}"),
    ("1+x^2", "x^2+1"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\left(1, 2\\right)", "(1,2)"),
    ("10", "10.0"),
]
DIFFERENT = [("\\frac{1}{3}", "\\frac{1}{2}"), ("x^2-1", "x^2+1"), ("(1,3)", "(1,2)"), ("4", "3")]


@pytest.mark.parametrize(("pred", "gold"), EQUIVALENT)
def test_math_verify_accepts_what_string_comparison_rejects(pred: str, gold: str) -> None:
    assert not is_correct(pred, gold)  # the string comparison of the plain answer types
    assert math_equal(pred, gold) and answers_match(pred, gold, "math")


@pytest.mark.parametrize(("pred", "gold"), DIFFERENT)
def test_math_verify_rejects_different_answers(pred: str, gold: str) -> None:
    assert not answers_match(pred, gold, "math")


def test_boxed_extraction_reads_nested_braces_and_the_last_box() -> None:
    text = "First try \\boxed{3}. Correction: $\\boxed{\\frac{\\sqrt{3}}{2}}$."
    assert last_boxed(text) == "\\frac{\\sqrt{3}}{2}" and extract_math(text) == "\\frac{\\sqrt{3}}{2}"
    assert extract_answer("So \\boxed{\\dfrac{1}{2}}.", "math") == "\\dfrac{1}{2}"
    assert extract_math("The final answer is $2\\sqrt{3}$.", "strict") == "2\\sqrt{3}"
    assert extract_math("we get 7 and then 9", "strict") is None  # no anchor, no box
    assert extract_math("we get 7 and then 9", "flexible") == "9"
    assert extract_math("no maths here", "auto") is None
    # A MATH solution's gold is its last box; a bare gold loses its "$".
    assert normalize_answer("Hence $x = \\boxed{5}$.", "math") == "5" and normalize_math("$\\pi$") == "\\pi"


def test_a_boxed_fraction_is_a_fraction_for_numeric_answers_too() -> None:
    # Before issue #16 the number extractor read "\boxed{\frac{1}{2}}" as 2 (the last digit).
    assert extract_answer("so \\boxed{\\frac{1}{2}}.", "number") == "0.5"
    assert extract_answer("The answer is $\\dfrac34$", "number") == "0.75"


@pytest.mark.parametrize(
    ("text", "gold", "tolerance", "right"),
    [
        ("The answer is $1,234.50.", "1234.5", None, True),
        ("#### 1,000", "1000", None, True),
        ("She pays 18 dollars in total. The answer is 18 dollars.", "18", None, True),
        ("The answer is 12.5%.", "12.5", None, True),
        ("The answer is 0.3333.", "1/3", 1e-3, True),
        ("The answer is 0.3333.", "1/3", None, False),
        ("The answer is 0.33.", "1/3", 1e-3, False),
        ("The answer is 1000001.", "1000000", 1e-4, True),  # relative to the gold
        ("The answer is 18.", "17", 1e-4, False),
    ],
)
def test_numbers_with_commas_units_dollars_and_tolerance(text, gold, tolerance, right) -> None:
    pred = extract_answer(text, "number")
    assert answers_match(pred, normalize_answer(gold, "number"), "number", tolerance) is right


def test_multiple_choice_answers_given_as_option_text() -> None:
    opts = ["a lake", "the ocean", "a puddle"]
    assert extract_answer("The answer is the ocean.", "choice", choices=opts) == "B"
    assert (
        extract_answer("Not a lake: salt water fills the ocean", "choice", choices=opts) == "B"
    )  # the last mention
    assert extract_answer("It could be a lake or a puddle.", "choice", choices=opts) == "C"
    assert extract_answer("No idea.", "choice", choices=opts) is None
    values = ["\\frac{1}{2}", "\\frac{3}{4}", "1", "2"]  # MMLU-Math: an option's value, equivalent
    assert extract_answer("The answer is $\\boxed{0.75}$.", "choice", choices=values) == "B"


def test_votes_group_equivalent_answers_and_the_rlmec_stages_label_alike() -> None:
    from evaluation.reasoning.evaluator import _vote_keys
    from evaluation.reasoning.methods import self_consistency
    from reasoning.questions import record_from_dict
    from stages.rlmec.sample import label

    rec = record_from_dict(
        {"question": "q", "answer": "\\frac{1}{2}", "answer_type": "math"}, "t:1", "m1", "math"
    )
    keys = _vote_keys(["3", "0.5", "\\dfrac{1}{2}", None, "3.0"], rec)
    assert keys == ["3", "0.5", "0.5", None, "3"]
    assert self_consistency(keys, 5).answer == "3"  # 2 votes each: the first seen wins, as for strings
    assert self_consistency(keys[1:], 4).answer == "0.5"  # 0.5 and \dfrac{1}{2} are one answer, 2 votes
    # RLMEC's sampling stage labels a sample with the evaluation's comparison (training and eval agree).
    assert label(rec, "Halve it: $\\boxed{0.5}$") == ("0.5", True)
    num = record_from_dict({"question": "q", "answer": "1/3", "tolerance": 1e-3}, "t:2", "n1", "arith")
    assert label(num, "The answer is 0.3333.") == ("0.3333", True)
