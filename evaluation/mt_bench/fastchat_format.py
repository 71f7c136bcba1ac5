"""FastChat llm_judge files, read and written as FastChat does, so its own scripts keep working.

- ``question.jsonl``: ``{"question_id", "category", "turns": [str, ...], "reference"?: [str, ...]}``
  (any number of turns). Quartet adds ``"generated_turns": [i, ...]`` for turns an Ask model wrote
  (MT-Bench++-style extension) and ``"extension"`` (what the follow-ups were conditioned on, which
  model wrote which reference answers); FastChat ignores unknown keys.
- reference answers (``reference_answer/<judge>.jsonl``) and model answers (``model_answer/<model_id>.jsonl``):
  ``{"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [str, ...]}], "tstamp"}``.
- single-answer judgments (``model_judgment/<judge>_single.jsonl``):
  ``{"question_id", "model", "judge": [judge_model, prompt_name], "user_prompt", "judgment", "score",
  "turn", "tstamp"}``, with ``score`` -1 when the verdict could not be parsed (as FastChat writes it);
  Quartet adds ``system_prompt`` and, where a reference turn had none, ``graded_without_reference``.
- pairwise judgments (``model_judgment/<judge>_pair.jsonl``): ``{"question_id", "model_1", "model_2",
  "g1_winner", "g2_winner", "judge", "g1_user_prompt", "g1_judgment", "g2_user_prompt", "g2_judgment",
  "turn", "tstamp"}`` (:mod:`evaluation.mt_bench.pairwise`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.errors import QuartetError
from utils.text_files import iter_json_objects


@dataclass
class Question:
    question_id: int | str
    category: str
    turns: list[str]
    reference: list[str] | None = None
    generated_turns: list[int] = field(default_factory=list)
    extension: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "question_id": self.question_id,
            "category": self.category,
            "turns": self.turns,
        }
        if self.reference:
            out["reference"] = self.reference
        if self.generated_turns:
            out["generated_turns"] = self.generated_turns
        if self.extension:
            out["extension"] = self.extension
        return out


def _jsonl_rows(path: str | Path) -> Iterable[tuple[str, dict[str, Any]]]:
    p = Path(path)
    if not p.is_file():
        raise QuartetError(f"{p}: no such file")
    for n, row in iter_json_objects(p):
        yield f"{p}:{n}", row


def _str_list(value: Any, where: str, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise QuartetError(f"{where}: {name!r} must be a list of strings")
    return value


def _question_id(row: dict[str, Any], where: str) -> int | str:
    """``row["question_id"]``: an integer or a string (FastChat's ids are integers), else one error line."""
    qid = row["question_id"]
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise QuartetError(f"{where}: 'question_id' must be an integer or a string, got {json.dumps(qid)}")
    return qid


def read_questions(path: str | Path) -> list[Question]:
    """Questions of a FastChat ``question.jsonl``; a bad record is one error naming file:line."""
    questions, seen = [], set()
    for where, row in _jsonl_rows(path):
        for key in ("question_id", "turns"):
            if key not in row:
                raise QuartetError(f"{where}: missing {key!r} (FastChat question.jsonl format)")
        qid = _question_id(row, where)
        turns = _str_list(row["turns"], where, "turns")
        if not turns or not all(t.strip() for t in turns):
            raise QuartetError(f"{where}: question {qid} has no turns (or an empty one)")
        if qid in seen:
            raise QuartetError(f"{where}: duplicate question_id {qid}")
        seen.add(qid)
        reference = _str_list(row["reference"], where, "reference") if row.get("reference") else None
        questions.append(
            Question(
                qid,
                str(row.get("category", "general")),
                turns,
                reference,
                list(row.get("generated_turns", [])),
                row.get("extension") if isinstance(row.get("extension"), dict) else None,
            )
        )
    if not questions:
        raise QuartetError(f"{path}: no questions")
    return questions


def write_questions(path: str | Path, questions: Sequence[Question]) -> None:
    from utils.atomic import write_jsonl_atomic

    write_jsonl_atomic(path, (q.to_json() for q in questions))


def answer_record(question_id: int | str, model_id: str, turns: list[str]) -> dict[str, Any]:
    """One line of ``model_answer/<model_id>.jsonl``."""
    return {
        "question_id": question_id,
        "answer_id": uuid.uuid4().hex[:22],
        "model_id": model_id,
        "choices": [{"index": 0, "turns": list(turns)}],
        "tstamp": time.time(),
    }


def read_answers(path: str | Path) -> dict[int | str, list[str]]:
    """question_id -> answer turns (first choice), from a FastChat model- or reference-answer file."""
    out: dict[int | str, list[str]] = {}
    for where, row in _jsonl_rows(path):
        try:
            turns = row["choices"][0]["turns"]
        except (KeyError, IndexError, TypeError):
            raise QuartetError(f"{where}: expected FastChat answer fields choices[0].turns") from None
        if "question_id" not in row:
            raise QuartetError(f"{where}: missing 'question_id'")
        out[_question_id(row, where)] = _str_list(turns, where, "choices[0].turns")
    return out


def judgment_record(
    question_id: int | str,
    model: str,
    judge: tuple[str, str],
    user_prompt: str,
    judgment: str,
    score: float | None,
    turn: int,
) -> dict[str, Any]:
    """One line of ``model_judgment/<judge>_single.jsonl``; an unparseable verdict has score -1."""
    return {
        "question_id": question_id,
        "model": model,
        "judge": list(judge),
        "user_prompt": user_prompt,
        "judgment": judgment,
        "score": -1 if score is None else score,
        "turn": turn,
        "tstamp": time.time(),
    }
