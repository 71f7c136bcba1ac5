"""``arith_rules``: a STAND-IN teacher for the bundled arithmetic data (``data/reasoning/``), not a model.

RLMEC's teacher is a strong LLM (Claude 2 in the paper). So that the tiny CPU demo has a real edit
signal without one, this editor answers the same two requests by rules:

- locate: step i of the prediction is wrong when an equation in it (``a op b = c``) is false, or when
  the numbers it uses (as a multiset) differ from those of the gold solution's step i, or when the
  gold solution has no step i. The first wrong step is named; a prediction with no wrong step but
  fewer steps than the gold has its last step named (it stopped early);
- rewrite: the continuation is the gold solution's text from its step k on, except its final-answer
  line (``#### N``), which is written in the prediction's own style when the prediction has one
  (``The answer is 46.`` becomes ``The answer is 44.``, on the same line when the prediction put it
  there). A minimum edit fixes the numbers, not the student's answer format; copying the gold's
  ``#### N`` taught the policy a new answer format through L_IR (weight 1.0 on every changed token),
  and it then wrote ``#### <wrong number>`` after correct steps.

It reads the structured fields of each :class:`~algorithms.minimum_edit.EditRequest` (record, prediction,
k); its replies use the same wording as a model's and go through the same parsers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

from algorithms.edit_steps import first_error_reply, gold_solution, split_steps
from algorithms.minimum_edit import EditRequest

_NUMBER = r"-?\d+(?:\.\d+)?"
_EQUATION = re.compile(rf"({_NUMBER})\s*([-+*/x×÷])\s*({_NUMBER})\s*=\s*({_NUMBER})")
_NUMBERS = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


def _apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "*x×":
        return a * b
    return a / b if b else None


def equations_hold(step: str) -> bool:
    """Every ``a op b = c`` in ``step`` is arithmetically true."""
    for a, op, b, c in _EQUATION.findall(step):
        value = _apply(Fraction(a), op, Fraction(b))
        if value is None or value != Fraction(c):
            return False
    return True


def step_numbers(step: str) -> Counter:
    """The multiset of numbers written in ``step`` (``$`` and thousands commas ignored)."""
    return Counter(Fraction(n) for n in _NUMBERS.findall(step.replace(",", "")))


def first_wrong_step(prediction: str, gold: str) -> int | None:
    """The first wrong step of ``prediction`` against the ``gold`` solution (1-based), or None."""
    pred_steps = [s.text for s in split_steps(prediction)]
    gold_steps = [s.text for s in split_steps(gold)]
    for i, step in enumerate(pred_steps):
        if (
            i >= len(gold_steps)
            or not equations_hold(step)
            or step_numbers(step) != step_numbers(gold_steps[i])
        ):
            return i + 1
    if pred_steps and len(pred_steps) < len(gold_steps):
        return len(pred_steps)
    return None


def gold_continuation(gold: str, k: int) -> str:
    """The gold solution's text from its step k on (the whole text if it has fewer steps)."""
    steps = split_steps(gold)
    if not steps:
        return gold.strip()
    return gold[steps[min(k, len(steps)) - 1].start :].strip()


_GOLD_ANSWER_LINE = re.compile(r"\s*####\s*(\S+)\s*$")


def answer_in_prediction_style(continuation: str, prediction: str) -> str:
    """``continuation`` with its final ``#### N`` line in the prediction's own answer style: the
    prediction's last step with its last number replaced by N, after the same white space that
    precedes that step in the prediction. Unchanged when the prediction's last step is not an answer
    statement (it has no number, or an ``=``: a computing step) or is itself a ``####`` line, or the
    continuation has no ``####`` line."""
    gold_line = _GOLD_ANSWER_LINE.search(continuation)
    steps = split_steps(prediction)
    if gold_line is None or not steps or steps[-1].text.startswith("####") or "=" in steps[-1].text:
        return continuation
    last = steps[-1]
    numbers = list(_NUMBERS.finditer(last.text))
    if not numbers:
        return continuation
    n = numbers[-1]
    styled = last.text[: n.start()] + gold_line.group(1) + last.text[n.end() :]
    before = continuation[: gold_line.start()]
    if not before.strip():  # the continuation is only the answer line (k = the answer step)
        return styled
    gap = prediction[steps[-2].end : last.start] if len(steps) > 1 else "\n"
    return before + (gap or " ") + styled


def arith_rules(requests: Sequence[EditRequest]) -> list[str]:
    """The stand-in teacher as an editor (see the module docstring)."""
    replies = []
    for req in requests:
        gold = gold_solution(req.record)
        if req.kind == "locate":
            replies.append(first_error_reply(first_wrong_step(req.prediction, gold)))
        elif req.kind == "rewrite":
            continuation = gold_continuation(gold, int(req.step or 1))
            replies.append(answer_in_prediction_style(continuation, req.prediction))
        else:
            raise ValueError(f"arith_rules: unknown request kind {req.kind!r}")
    return replies
