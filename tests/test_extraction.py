"""Answer extraction on realistic model outputs, in strict / flexible / auto modes."""

from __future__ import annotations

import pytest

from reasoning.answers import (
    extract_answer,
    extract_choice,
    extract_number,
    extract_text,
    extract_yes_no,
    is_correct,
    normalize_answer,
    normalize_number,
)

GSM8K_GOLD_STYLE = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"

# (output, strict, flexible, auto)
NUMBER_CASES = [
    (GSM8K_GOLD_STYLE, "72", "72", "72"),
    ("Janet has 16 - 3 - 4 = 9 eggs. She makes 9 * 2 = $18. The answer is 18.", "18", "18", "18"),
    ("The answer is $1,000.50.", "1000.5", "1000.5", "1000.5"),
    ("So the total is 1,234 dollars.\n#### 1,234", "1234", "1234", "1234"),
    ("He ends up with 3.50 dollars", None, "3.5", "3.5"),
    ("Total = 5-3 = 2", None, "2", "2"),
    ("The temperature dropped to -7 degrees. The answer is -7.", "-7", "-7", "-7"),
    ("The answer is **42**", "42", "42", "42"),
    ("Each person gets 3/4 of a pizza.", None, "0.75", "0.75"),
    ("The answer is that Tom wins the race.\n#### 5", "5", "5", "5"),
    ("I am not sure how to solve this.", None, None, None),
    ("The final answer is \\boxed{12}.", "12", "12", "12"),
    ("It costs $ 7.", None, "7", "7"),
    ("Step 1: 4 * 5 = 20.\nStep 2: 20 + 2 = 22.\nFinal answer: 22", "22", "22", "22"),
    ("The answer is 12. Question: Sam has 5 pens", "12", "5", "12"),
    ("Answer: 0.50", "0.5", "0.5", "0.5"),
    ("So she saved 2.0 hours. The answer is 2.0 hours.", "2", "2", "2"),
    ("The answer is: 1,000,000", "1000000", "1000000", "1000000"),
    ("The answer is \u22125.", "-5", "-5", "-5"),
    ("We need 25% of 80, which is 20.", None, "20", "20"),
    ("The answer is 7 apples, not 8.", "7", "8", "7"),
    ("There are 3 bags with 4 in each, 3*4=12 #### 12.", "12", "12", "12"),
]


@pytest.mark.parametrize("text,strict,flexible,auto", NUMBER_CASES)
def test_extract_number_modes(text: str, strict: str | None, flexible: str | None, auto: str | None) -> None:
    assert extract_number(text, "strict") == strict
    assert extract_number(text, "flexible") == flexible
    assert extract_number(text, "auto") == auto


CHOICES = ["red", "blue", "green", "gray"]
# (output, strict, flexible, auto)
CHOICE_CASES = [
    ("The answer is (B).", "B", "B", "B"),
    ("I think (C) is right because 3 + 4 = 7.", None, "C", "C"),
    ("B", None, "B", "B"),
    ("Let me check each option.\nA. 12 is too small\nB. 13 fits", None, "B", "B"),
    ("Answer: d", "D", None, "D"),
    ("the answer is a tough one to call", None, None, None),
    ("Option C looks best.", None, "C", "C"),
    ("The answer is blue.", "B", None, "B"),
    ("#### A", "A", None, "A"),
    ("The sum is 33, which is option (D). The answer is (D).", "D", "D", "D"),
    ("The answer is E.", None, None, None),  # only 4 choices: E is not an option
    ("Between (A) and (C), I pick C) because it is larger.", None, "C", "C"),
]


@pytest.mark.parametrize("text,strict,flexible,auto", CHOICE_CASES)
def test_extract_choice_modes(text: str, strict: str | None, flexible: str | None, auto: str | None) -> None:
    assert extract_choice(text, 4, "strict", CHOICES) == strict
    assert extract_choice(text, 4, "flexible") == flexible
    assert extract_choice(text, 4, "auto", CHOICES) == auto


YESNO_CASES = [
    ("Yes, 17 is greater than 12.", None, "yes", "yes"),
    ("17 is less than 20, so the answer is no.", "no", "no", "no"),
    ("No. Wait, actually yes.", None, "yes", "yes"),
    ("The answer is Yes.", "yes", "yes", "yes"),
    ("It is odd. The answer is no. Yes it is odd.", "no", "yes", "no"),
    ("Not sure.", None, None, None),
]


@pytest.mark.parametrize("text,strict,flexible,auto", YESNO_CASES)
def test_extract_yes_no_modes(text: str, strict: str | None, flexible: str | None, auto: str | None) -> None:
    assert extract_yes_no(text, "strict") == strict
    assert extract_yes_no(text, "flexible") == flexible
    assert extract_yes_no(text, "auto") == auto


@pytest.mark.parametrize(
    "a,b",
    [
        ("3.50", "3.5"),
        ("1,000", "1000"),
        ("$12", "12"),
        ("12.", "12"),
        ("0.750", "3/4"),
        ("+4", "4"),
        ("-0", "0"),
    ],
)
def test_normalize_number_equivalences(a: str, b: str) -> None:
    assert normalize_number(a) == normalize_number(b)


def test_normalize_number_forms() -> None:
    assert normalize_number("1/3") == "1/3"
    assert normalize_number("2/6") == "1/3"
    assert normalize_number("-0.125") == "-0.125"
    assert normalize_number("6/3") == "2"
    assert normalize_number("abc") is None
    assert normalize_number("1/0") is None


def test_extract_answer_dispatch_and_gold_normalisation() -> None:
    assert extract_answer("so 4 + 5 = 9", "number") == "9"
    assert extract_answer("The answer is (b)", "choice", num_choices=3) == "B"
    assert extract_answer("The answer is yes.", "yesno") == "yes"
    assert extract_answer("The answer is The Moon.", "text") == "moon"
    assert extract_text("Paris\n\nLondon.", "flexible") == "london"
    assert normalize_answer("(C)", "choice") == "C"
    assert normalize_answer("True", "yesno") == "yes"
    assert normalize_answer("1,200.0", "number") == "1200"
    assert is_correct("12", "12") and not is_correct(None, "12") and not is_correct("12", "13")


def test_extraction_errors() -> None:
    with pytest.raises(ValueError, match="extraction mode"):
        extract_number("1", "loose")
    with pytest.raises(ValueError, match="num_choices"):
        extract_answer("A", "choice")
    with pytest.raises(ValueError, match="answer_type"):
        extract_answer("A", "date")
