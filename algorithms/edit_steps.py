"""Solutions as numbered steps, the two editor prompts of RLMEC's minimum-edit procedure, and the
parsers of the editor's replies (METHODS.md §3, step 2).

A *step* is a sentence of a solution: lines are split first, then each line at sentence ends
(``.``, ``!`` or ``?`` followed by white space). A final-answer line such as ``#### 44`` is a step of
its own. Every step keeps its character span, so the prediction's steps before k can be kept as a
fixed prefix *verbatim* (``prediction[:steps[k-1].start]``), which keeps its tokens identical to the
original's.

Prompts (chat messages, one user turn), both conditioned on the problem and the gold solution:

- locate: "find the first wrong step", answered ``The first error step is [k]`` or
  ``The solution is correct.``;
- rewrite: "rewrite from step k with minimal changes": the reply is the continuation of the
  solution from step k on, in the solution's own format (plain text, no step labels), which is
  appended to the kept prefix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from inference.chat import user_messages
from reasoning.questions import ReasoningRecord

Message = dict[str, str]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_STEP_LABEL = re.compile(r"^\s*step\s*\d+\s*[:.)]\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Step:
    """One step: its text and its ``[start, end)`` span in the solution it came from."""

    text: str
    start: int
    end: int


def split_steps(solution: str) -> list[Step]:
    """The steps of ``solution`` in order (empty lines and surrounding white space dropped)."""
    steps: list[Step] = []
    offset = 0
    for line in solution.splitlines(keepends=True):
        pos = 0
        for piece in _SENTENCE_END.split(line):
            at = line.index(piece, pos)
            pos = at + len(piece)
            stripped = piece.strip()
            if stripped:
                start = offset + at + (len(piece) - len(piece.lstrip()))
                steps.append(Step(stripped, start, start + len(stripped)))
        offset += len(line)
    return steps


def numbered(steps: Sequence[Step | str]) -> str:
    """``Step 1: ...`` lines."""
    texts = [s.text if isinstance(s, Step) else s for s in steps]
    return "\n".join(f"Step {i}: {t}" for i, t in enumerate(texts, start=1))


def gold_solution(record: ReasoningRecord) -> str:
    """The gold solution text of a reasoning record: its rationale, then ``#### <gold>``."""
    return f"{record.rationale}\n#### {record.gold}" if record.rationale else f"#### {record.gold}"


def kept_prefix(prediction: str, steps: Sequence[Step], k: int) -> str:
    """The prediction's text before step k (1-based), verbatim, up to the start of step k."""
    if not 1 <= k <= len(steps):
        raise ValueError(f"step {k} is out of range 1..{len(steps)}")
    return prediction[: steps[k - 1].start]


LOCATE_TEMPLATE = (
    "You are checking a student's solution to a problem against a reference solution.\n\n"
    "Problem:\n{question}\n\n"
    "Reference solution:\n{gold_steps}\n\n"
    "Student's solution:\n{prediction_steps}\n\n"
    "Find the first wrong step of the student's solution. Reply with "
    '"The first error step is [k]" where k is the step number, or with '
    '"The solution is correct." if no step is wrong.'
)

REWRITE_TEMPLATE = (
    "You are correcting a student's solution to a problem with as few changes as possible.\n\n"
    "Problem:\n{question}\n\n"
    "Reference solution:\n{gold_steps}\n\n"
    "Student's solution:\n{prediction_steps}\n\n"
    "{keep}rewrite the solution from step {k} on, changing as little as possible so that it is "
    "correct. Write only the continuation after the kept steps, in the student's own format and "
    "wording, ending with a final answer line written as the student writes it.\n\n"
    "Kept steps:\n{prefix}"
)


def locate_messages(record: ReasoningRecord, prediction: str) -> list[Message]:
    """The "find the first wrong step" prompt."""
    return user_messages(
        LOCATE_TEMPLATE.format(
            question=record.question,
            gold_steps=numbered(split_steps(gold_solution(record))),
            prediction_steps=numbered(split_steps(prediction)),
        )
    )


def _keep_clause(k: int) -> str:
    if k <= 1:
        return "Keep nothing: "
    return "Keep step 1 unchanged and " if k == 2 else f"Keep steps 1 to {k - 1} unchanged and "


def rewrite_messages(record: ReasoningRecord, prediction: str, k: int) -> list[Message]:
    """The "rewrite from step k with minimal changes" prompt (k = 1 rewrites the whole solution)."""
    steps = split_steps(prediction)
    prefix = kept_prefix(prediction, steps, k) if steps else ""
    return user_messages(
        REWRITE_TEMPLATE.format(
            question=record.question,
            gold_steps=numbered(split_steps(gold_solution(record))),
            prediction_steps=numbered(steps),
            k=k,
            keep=_keep_clause(k),
            prefix=prefix.strip() or "(none)",
        )
    )


_FIRST_ERROR = re.compile(r"first\s+error(?:\s+step)?\s+is\s*(?:step\s*)?\[?\s*(-?\d+)\s*\]?", re.IGNORECASE)
_CORRECT = re.compile(r"\b(?:solution\s+is\s+correct|all\s+steps\s+are\s+correct|no\s+wrong\s+step)\b", re.I)


@dataclass(frozen=True)
class LocateReply:
    """A parsed locate reply: ``step`` (1-based) when a wrong step was named, ``correct`` when none,
    or ``error`` (the reason it could not be used: ``no_step_index`` or ``step_out_of_range``)."""

    step: int | None = None
    correct: bool = False
    error: str | None = None


def parse_first_error(reply: str, num_steps: int) -> LocateReply:
    """Read ``The first error step is [k]`` (k in 1..num_steps) or ``The solution is correct``.

    A named step wins over a "correct" phrase in the same reply.
    """
    m = _FIRST_ERROR.search(reply)
    if m:
        k = int(m.group(1))
        if 1 <= k <= num_steps:
            return LocateReply(step=k)
        return LocateReply(error="step_out_of_range")
    if _CORRECT.search(reply):
        return LocateReply(correct=True)
    return LocateReply(error="no_step_index")


def first_error_reply(k: int | None) -> str:
    """The canonical locate reply (the GRM's training target)."""
    return "The solution is correct." if k is None else f"The first error step is [{k}]"


def parse_continuation(reply: str) -> str:
    """The continuation text of a rewrite reply: outer white space and ``Step j:`` labels removed."""
    lines = [_STEP_LABEL.sub("", line) for line in reply.strip().splitlines()]
    return "\n".join(lines).strip()


def join_rewrite(prefix: str, continuation: str) -> str:
    """prefix + continuation; a space is put between them when the prefix ends mid-line without one."""
    if prefix and not prefix[-1].isspace() and continuation:
        return f"{prefix} {continuation}"
    return prefix + continuation
