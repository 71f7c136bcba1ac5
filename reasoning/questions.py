"""Loading and validating reasoning questions.

Format: one JSON object per line with

- ``question`` (str, required);
- ``answer`` (required): the gold answer. A GSM8K-style ``"...rationale...\\n#### 72"`` is understood:
  the gold is what follows ``####`` and the text before it is the rationale (GSM8K's ``<<48/2=24>>``
  calculator annotations are removed from it);
- ``choices`` (optional list of option texts): a multiple-choice question; ``answer`` is then a
  letter (``"B"`` / ``"(B)"``) or exactly one option's text;
- ``task`` (optional): the source task, used for per-task scores and for choosing few-shot exemplars
  when the question type is "known"; defaults to the file's stem;
- ``id`` (optional): a unique id; defaults to ``"<stem>-<line>"``;
- ``answer_type`` (optional): ``number``, ``choice``, ``yesno``, ``text`` or ``math`` (MATH's LaTeX
  answers, compared through math-verify); inferred when absent (never as ``math``);
- ``tolerance`` (optional): numeric answers within this relative tolerance count as right.

JSONL and Parquet files are read; every error names the file, the line (row) and the fix.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoning.answers import ANSWER_TYPES, choice_letters, normalize_answer, normalize_number
from utils.text_files import iter_lines

_CALC = re.compile(r"<<[^<>]*>>")


class ReasoningDataError(ValueError):
    """A reasoning data file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class ReasoningRecord:
    """One question with its normalised gold answer."""

    id: str
    question: str
    gold: str
    answer_type: str
    task: str
    rationale: str = ""
    choices: tuple[str, ...] = field(default_factory=tuple)
    tolerance: float | None = None

    @property
    def num_choices(self) -> int | None:
        return len(self.choices) if self.choices else None


def split_answer(answer: str) -> tuple[str, str]:
    """``(gold, rationale)`` from a possibly GSM8K-style answer string."""
    if "####" in answer:
        rationale, gold = answer.rsplit("####", 1)
        return gold.strip(), _CALC.sub("", rationale).strip()
    return answer.strip(), ""


def infer_answer_type(gold: str, has_choices: bool) -> str:
    """``choice`` with options, else ``yesno`` / ``number`` / ``text`` from the gold's form."""
    if has_choices:
        return "choice"
    if normalize_answer(gold, "yesno") is not None:
        return "yesno"
    if normalize_number(gold) is not None:
        return "number"
    return "text"


def record_from_dict(obj: Any, where: str, default_id: str, default_task: str) -> ReasoningRecord:
    """Validate one raw object; ``where`` (``"file:line"``) prefixes every error."""
    if not isinstance(obj, Mapping):
        raise ReasoningDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "question" not in obj:
        raise ReasoningDataError(
            f"{where}: missing field 'question' (keys: {sorted(obj)}); add the question text"
        )
    if "answer" not in obj or obj["answer"] is None:
        raise ReasoningDataError(
            f"{where}: missing field 'answer' (keys: {sorted(obj)}); add the gold answer "
            "(GSM8K-style 'rationale #### 42' is accepted)"
        )
    question = obj["question"]
    if not isinstance(question, str) or not question.strip():
        raise ReasoningDataError(f"{where}: field 'question' must be a non-empty string")
    answer = obj["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise ReasoningDataError(f"{where}: field 'answer' must be a string or a number, got {answer!r}")
    if isinstance(answer, float) and not math.isfinite(answer):
        raise ReasoningDataError(f"{where}: field 'answer' is {answer}, not a finite number")
    gold_raw, rationale = split_answer(str(answer))
    choices_raw = obj.get("choices")
    choices: tuple[str, ...] = ()
    if choices_raw is not None:
        if not isinstance(choices_raw, (list, tuple)) or len(choices_raw) < 2:
            raise ReasoningDataError(f"{where}: field 'choices' must be a list of at least 2 options")
        if len(choices_raw) > 26:
            raise ReasoningDataError(f"{where}: field 'choices' has {len(choices_raw)} options; at most 26")
        choices = tuple(str(c) for c in choices_raw)
    answer_type = obj.get("answer_type") or infer_answer_type(gold_raw, bool(choices))
    if answer_type not in ANSWER_TYPES:
        raise ReasoningDataError(f"{where}: answer_type {answer_type!r} is not one of {list(ANSWER_TYPES)}")
    if answer_type == "choice":
        if not choices:
            raise ReasoningDataError(f"{where}: answer_type 'choice' needs a 'choices' list")
        gold = normalize_answer(gold_raw, "choice")
        if gold is None or gold not in choice_letters(len(choices)):
            matches = [i for i, c in enumerate(choices) if c.strip().lower() == gold_raw.strip().lower()]
            if len(matches) != 1:
                raise ReasoningDataError(
                    f"{where}: answer {gold_raw!r} is neither a letter in "
                    f"{choice_letters(len(choices))} nor exactly one of the choices"
                )
            gold = choice_letters(len(choices))[matches[0]]
    else:
        gold = normalize_answer(gold_raw, answer_type)
        if gold is None:
            raise ReasoningDataError(f"{where}: answer {gold_raw!r} is not a valid '{answer_type}' answer")
    tolerance = obj.get("tolerance")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))):
        raise ReasoningDataError(f"{where}: field 'tolerance' must be a number, got {tolerance!r}")
    return ReasoningRecord(
        id=str(obj.get("id", default_id)),
        question=question.strip(),
        gold=gold,
        answer_type=answer_type,
        task=str(obj.get("task") or default_task),
        rationale=rationale or str(obj.get("rationale") or ""),
        choices=choices,
        tolerance=float(tolerance) if tolerance is not None else None,
    )


def _rows(path: Path) -> Iterable[tuple[int, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield i, row
        return
    for i, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            raise ReasoningDataError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno})") from None


def load_reasoning_records(
    path: str | Path, task: str | None = None, limit: int | None = None
) -> list[ReasoningRecord]:
    """Read and validate a reasoning file (JSONL or Parquet).

    Args:
        path: the file.
        task: task name for records without a ``task`` field (default: the file's stem).
        limit: keep only the first ``limit`` records.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Reasoning data file not found: {path}")
    default_task = task or path.stem
    records: list[ReasoningRecord] = []
    seen: dict[str, int] = {}
    for line, obj in _rows(path):
        rec = record_from_dict(obj, f"{path}:{line}", f"{path.stem}-{line}", default_task)
        if rec.id in seen:
            raise ReasoningDataError(f"{path}:{line}: duplicate id {rec.id!r} (first on line {seen[rec.id]})")
        seen[rec.id] = line
        records.append(rec)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise ReasoningDataError(f"{path}: no records found")
    return records
