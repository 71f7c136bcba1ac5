"""Answer extraction from free-form model outputs (pure functions).

Three modes, the first two as in lm-evaluation-harness' GSM8K filters:

- ``strict``: only an explicit answer statement counts: ``#### X``, ``The answer is X``,
  ``Answer: X`` or ``\\boxed{X}`` (the first one in the text);
- ``flexible``: the last answer-looking token anywhere in the text (the last number, the last option
  letter, the last yes/no);
- ``auto``: ``strict`` when an explicit statement is present, else ``flexible``.

Every extractor returns a *normalised* answer string (see :func:`normalize_answer`) or ``None`` when
nothing parses; evaluators count ``None`` as a parse failure. :func:`answers_match` compares a
prediction with the gold as the papers score: numbers within a tolerance, ``math`` answers (MATH's
``\\boxed{}``) by symbolic equivalence through ``math-verify`` (:mod:`reasoning.math_answers`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from fractions import Fraction

ANSWER_TYPES = ("number", "choice", "yesno", "text", "math")
EXTRACTION_MODES = ("strict", "flexible", "auto")

# A number: optional sign (not glued to a preceding word/digit, so "5-3" is 5 and 3), optional "$",
# digits with optional thousands commas and decimals, or a bare ".5"; optionally a fraction "/d".
_NUM = (
    r"(?:(?<![\w])[-\u2212+])?\$?\s?"
    r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?\d+(?:\.\d+)?)?"
)
_NUM_RE = re.compile(_NUM)
_LEAD = r"(?:\*\*|\$|\\\(|\s)*"  # markdown bold, "$", "\(" between the cue and the value

_STATEMENT_CUES = [
    r"####\s*",
    r"\b(?:the\s+)?(?:final\s+)?answer\s+is\s*[:=]?\s*",
    r"\bfinal\s+answer\s*[:=]\s*",
    r"(?:^|\n)\s*(?:\*\*)?answer(?:\*\*)?\s*[:=]\s*",
    r"\\boxed\{\s*",
]
_STATEMENT_RE = [re.compile(c + _LEAD, re.IGNORECASE) for c in _STATEMENT_CUES]


def _statements(text: str) -> list[str]:
    """Explicit answer statements in order of appearance: the text right after each cue."""
    found = [(m.start(), text[m.end() :]) for rx in _STATEMENT_RE for m in rx.finditer(text)]
    return [after for _, after in sorted(found, key=lambda x: x[0])]


def _check_mode(mode: str) -> None:
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"Unknown extraction mode {mode!r}; choose one of {list(EXTRACTION_MODES)}")


# ---------------------------------------------------------------- numbers
def normalize_number(raw: str) -> str | None:
    """Canonical string for a number: ``"$1,000.50"`` -> ``"1000.5"``, ``"3/4"`` -> ``"0.75"``.

    Integers print without a decimal point; other terminating decimals print in shortest decimal form;
    non-terminating fractions print as a reduced ``"p/q"``. Returns None if ``raw`` is not a number.
    """
    s = raw.strip().replace("\u2212", "-").replace("$", "").replace(",", "").replace(" ", "")
    s = s.rstrip(".")
    if s.startswith("+"):
        s = s[1:]
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            value = Fraction(num) / Fraction(den)
        else:
            value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    # Terminating decimal: print exactly, without trailing zeros.
    sign = "-" if value < 0 else ""
    value = abs(value)
    whole = value.numerator // value.denominator
    frac = value - whole
    digits = []
    while frac:
        frac *= 10
        d = frac.numerator // frac.denominator
        digits.append(str(d))
        frac -= d
    return f"{sign}{whole}." + "".join(digits)


def _numbers(text: str) -> list[str]:
    return [m.group(0) for m in _NUM_RE.finditer(text)]


_LATEX_FRACS = (
    re.compile(r"\\[dt]?frac\{\s*([-\d.,]+)\s*\}\{\s*([-\d.,]+)\s*\}"),  # \frac{1}{2}
    re.compile(r"\\[dt]?frac(\d)(\d)"),  # \frac12
)


def _latex_numbers(text: str) -> str:
    """LaTeX fractions of plain numbers written as ``a/b`` (so ``\\boxed{\\frac{1}{2}}`` reads as 1/2, not 2)."""
    for rx in _LATEX_FRACS:
        text = rx.sub(r"\1/\2", text)
    return text


def extract_number(text: str, mode: str = "auto") -> str | None:
    """The numeric answer in ``text`` (normalised), or None."""
    _check_mode(mode)
    text = _latex_numbers(text)
    if mode in ("strict", "auto"):
        for after in _statements(text):
            m = _NUM_RE.match(after)
            if m:
                return normalize_number(m.group(0))
        if mode == "strict":
            return None
    nums = _numbers(text)
    return normalize_number(nums[-1]) if nums else None


# ---------------------------------------------------------------- multiple choice
def choice_letters(num_choices: int) -> str:
    """``"ABCD"`` for 4 choices."""
    if not 1 <= num_choices <= 26:
        raise ValueError(f"num_choices must be in 1..26, got {num_choices}")
    return string.ascii_uppercase[:num_choices]


def _norm_text(s: str) -> str:
    s = s.lower().strip()
    s = "".join(ch for ch in s if ch not in string.punctuation)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def extract_choice(
    text: str,
    num_choices: int,
    mode: str = "auto",
    choices: Sequence[str] | None = None,
) -> str | None:
    """The option letter (``"A"``...) chosen in ``text``, or None.

    ``strict`` reads an explicit statement (``The answer is (B)``, ``#### C``, ``Answer: B``,
    ``\\boxed{B}``); when ``choices`` are given, a statement giving exactly one option's text (or, for
    mathematical options, an equivalent value) maps to its letter. ``flexible`` takes the last
    option-looking mention: ``(B)``, ``option B``, ``B)``, ``B.`` / ``B:`` at the start of a line, a reply
    that is just the letter, and failing those the option whose text is mentioned last.
    """
    _check_mode(mode)
    letters = choice_letters(num_choices)
    cls = f"[{letters}{letters.lower()}]"
    if mode in ("strict", "auto"):
        for after in _statements(text):
            m = re.match(rf"(?:option\s+|choice\s+)?([\(\[])?({cls})(?![\w])", after, re.IGNORECASE)
            # A lower-case letter counts only bracketed or ending the statement ("answer: d."), so the
            # article in "the answer is a tough one" is not read as option A.
            if m and (
                m.group(2).isupper() or m.group(1) or re.match(r"\s*(?:$|[.)\],;:\n])", after[m.end() :])
            ):
                return m.group(2).upper()
            hit = _statement_option(after, choices or (), letters)
            if hit is not None:
                return hit
        if mode == "strict":
            return None
    up = f"[{letters}]"
    patterns = [
        rf"[\(\[]({up})[\)\]]",
        rf"\b(?:option|choice)\s+({up})\b",
        rf"(?:^|\n)\s*({up})[\).:](?=\s|$)",
        rf"(?<![\w(])({up})\)",
    ]
    best: tuple[int, str] | None = None
    for p in patterns:
        for m in re.finditer(p, text, re.IGNORECASE if "option" in p else 0):
            if best is None or m.start(1) > best[0]:
                best = (m.start(1), m.group(1).upper())
    if best is not None:
        return best[1]
    bare = text.strip().strip(".:*)( ")
    if len(bare) == 1 and bare.upper() in letters:
        return bare.upper()
    return _last_option_text(text, choices or (), letters)


def _statement_option(after: str, choices: Sequence[str], letters: str) -> str | None:
    """The letter of the one option whose text the statement gives (ECQA, QASC and OpenbookQA answers
    are often written as the option's text): equal after normalisation, or, for mathematical options
    (MMLU-Math), equivalent under ``math-verify``."""
    if not choices:
        return None
    raw = re.split(r"\.(?:\s|$)|\n", after, maxsplit=1)[0]
    raw = raw[: _unbalanced_close(raw)].strip(" $*")  # inside \\boxed{...}: stop at its brace
    phrase = _norm_text(raw)
    hits = [i for i, c in enumerate(choices[: len(letters)]) if phrase and _norm_text(c) == phrase]
    if not hits and re.search(r"[\d\\]", raw):
        from reasoning.math_answers import math_equal

        hits = [i for i, c in enumerate(choices[: len(letters)]) if math_equal(raw, c)]
    return letters[hits[0]] if len(hits) == 1 else None


def _unbalanced_close(text: str) -> int:
    """Index of the first ``}`` that closes a brace opened before ``text`` (``len(text)`` if none)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return i
    return len(text)


def _last_option_text(text: str, choices: Sequence[str], letters: str) -> str | None:
    """Flexible fallback: the option whose text occurs last in ``text`` (None on a tie or no mention)."""
    norm = f" {_norm_text(text)} "
    found = [(norm.rfind(f" {_norm_text(c)} "), i) for i, c in enumerate(choices[: len(letters)])]
    found = [(pos, i) for pos, i in found if pos >= 0 and _norm_text(choices[i])]
    if not found:
        return None
    last = max(pos for pos, _ in found)
    at_last = [i for pos, i in found if pos == last]
    return letters[at_last[0]] if len(at_last) == 1 else None


# ---------------------------------------------------------------- yes / no
_YN_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def extract_yes_no(text: str, mode: str = "auto") -> str | None:
    """``"yes"`` or ``"no"``, or None."""
    _check_mode(mode)
    if mode in ("strict", "auto"):
        for after in _statements(text):
            m = re.match(r"\s*(yes|no)\b", after, re.IGNORECASE)
            if m:
                return m.group(1).lower()
        if mode == "strict":
            return None
    hits = _YN_RE.findall(text)
    return hits[-1].lower() if hits else None


# ---------------------------------------------------------------- free text
def extract_text(text: str, mode: str = "auto") -> str | None:
    """A short free-text answer: the statement's phrase (strict) or the last non-empty line (flexible)."""
    _check_mode(mode)
    if mode in ("strict", "auto"):
        for after in _statements(text):
            phrase = _norm_text(re.split(r"[.\n]", after, maxsplit=1)[0])
            if phrase:
                return phrase
        if mode == "strict":
            return None
    lines = [ln for ln in text.splitlines() if _norm_text(ln)]
    return _norm_text(lines[-1]) if lines else None


# ---------------------------------------------------------------- dispatch
def extract_answer(
    text: str,
    answer_type: str = "number",
    mode: str = "auto",
    num_choices: int | None = None,
    choices: Sequence[str] | None = None,
) -> str | None:
    """Extract a normalised answer of ``answer_type`` from ``text``; None on parse failure."""
    if answer_type == "number":
        return extract_number(text, mode)
    if answer_type == "choice":
        if num_choices is None:
            num_choices = len(choices) if choices else 0
        if not num_choices:
            raise ValueError("Multiple-choice extraction needs num_choices or choices")
        return extract_choice(text, num_choices, mode, choices)
    if answer_type == "yesno":
        return extract_yes_no(text, mode)
    if answer_type == "text":
        return extract_text(text, mode)
    if answer_type == "math":
        from reasoning.math_answers import extract_math

        return extract_math(text, mode)
    raise ValueError(f"Unknown answer_type {answer_type!r}; choose one of {list(ANSWER_TYPES)}")


def normalize_answer(value: str, answer_type: str) -> str | None:
    """Normalise a *gold* answer for comparison with extracted ones."""
    if answer_type == "number":
        return normalize_number(value)
    if answer_type == "choice":
        v = value.strip().strip("()[]. ").upper()
        return v if len(v) == 1 and v.isalpha() else None
    if answer_type == "yesno":
        v = value.strip().strip(".!").lower()
        return {"yes": "yes", "no": "no", "true": "yes", "false": "no"}.get(v)
    if answer_type == "text":
        return _norm_text(value) or None
    if answer_type == "math":
        from reasoning.math_answers import normalize_math

        return normalize_math(value)
    raise ValueError(f"Unknown answer_type {answer_type!r}; choose one of {list(ANSWER_TYPES)}")


def is_correct(pred: str | None, gold: str | None) -> bool:
    """Both normalised and equal (a parse failure is never correct)."""
    return pred is not None and gold is not None and pred == gold


def numbers_close(pred: str, gold: str, tolerance: float) -> bool:
    """``|pred - gold| <= tolerance * max(1, |gold|)`` for two normalised numbers (``"1/3"``, ``"0.3333"``)."""
    try:
        p, g = Fraction(pred), Fraction(gold)
    except (ValueError, ZeroDivisionError):
        return False
    return abs(p - g) <= Fraction(tolerance) * max(1, abs(g))


def answers_match(
    pred: str | None, gold: str | None, answer_type: str = "number", tolerance: float | None = None
) -> bool:
    """Whether an extracted answer is right, as the benchmark scores it (a parse failure never is).

    ``number``: equal, or within ``tolerance`` (relative to the gold, absolute below 1) when it is set;
    ``math``: symbolically equivalent under ``math-verify`` (``\\dfrac{1}{2}``, ``\\frac12`` and ``0.5``
    agree); other types: equal after normalisation.
    """
    if pred is None or gold is None:
        return False
    if pred == gold:
        return True
    if answer_type == "number" and tolerance:
        return numbers_close(pred, gold, tolerance)
    if answer_type == "math":
        from reasoning.math_answers import math_equal

        return math_equal(pred, gold)
    return False
