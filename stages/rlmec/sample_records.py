"""Reading the RLMEC stages' JSONL with per-record checks: every bad record is counted by reason and
either skipped (``on_bad_record=skip``, the default: one bad line never stops a stage) or reported as
one ``error:`` line naming ``file:line`` (``on_bad_record=error``).

The records flow through the stages as one JSON object per policy sample (``rlmec_sample`` writes
them, ``rlmec_edit`` adds the edit fields, ``rlmec_grm_data`` / ``rlmec_rl_data`` read them):

- ``id``, ``problem_id``, ``sample_index``;
- ``problem``: the problem's own record (``question``, ``answer`` with ``#### gold``, optional
  ``choices`` / ``task`` / ``id``), so no stage needs the problem file again;
- ``prompt``: the chat messages the policy answered (the reasoning eval's CoT prompt);
- ``response`` (the sampled solution), ``pred`` (its extracted answer), ``correct``;
- after ``rlmec_edit``: ``rewrite`` (text or null), ``edit_status``, ``first_error_step``,
  ``drop_reason``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from algorithms.edit_steps import gold_solution
from reasoning.answers import answers_match, extract_answer
from reasoning.questions import ReasoningDataError, ReasoningRecord, record_from_dict
from utils.errors import ConfigError, DataError
from utils.record_files import read_records

log = logging.getLogger(__name__)

SAMPLE_FIELDS = ("id", "problem_id", "problem", "prompt", "response", "correct")
EDIT_FIELDS = (*SAMPLE_FIELDS, "rewrite", "edit_status")
ON_BAD_RECORD = ("skip", "error")


class BadRecord(ValueError):
    """One record can't be used: ``reason`` is the counter name, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class BadRecords:
    """Bad records counted by reason; ``policy`` is ``skip`` (count, warn) or ``error`` (raise)."""

    policy: str = "skip"
    counts: Counter | None = None
    examples: int = 5

    def __post_init__(self) -> None:
        if self.policy not in ON_BAD_RECORD:
            raise ConfigError([f"stage.on_bad_record={self.policy!r} must be 'skip' or 'error'"])
        self.counts = self.counts if self.counts is not None else Counter()

    def add(self, where: str, err: BadRecord) -> None:
        """Count ``err`` (at ``where``, ``file:line``) or raise it as a :class:`DataError`."""
        if self.policy == "error":
            raise DataError(f"{where}: {err}")
        assert self.counts is not None
        self.counts[err.reason] += 1
        if sum(self.counts.values()) <= self.examples:
            log.warning("skipping %s: %s", where, err)

    def summary(self) -> dict[str, int]:
        return dict(sorted((self.counts or {}).items()))


def problem_from_dict(obj: Any, where: str, default_id: str) -> ReasoningRecord:
    """A problem record whose gold answer the reasoning eval's extraction can read back from the gold
    solution (otherwise no sample could ever be labelled correct against it)."""
    try:
        rec = record_from_dict(obj, where, default_id, "rlmec")
    except ReasoningDataError as e:
        raise BadRecord("bad_problem", str(e).removeprefix(f"{where}: ")) from None
    solution = gold_solution(rec)
    got = extract_answer(solution, rec.answer_type, "auto", rec.num_choices, rec.choices)
    if not answers_match(got, rec.gold, rec.answer_type, rec.tolerance):
        raise BadRecord(
            "unparseable_gold",
            f"the gold answer {rec.gold!r} can't be parsed back from the gold solution "
            f"(the reasoning eval's extraction reads {got!r})",
        )
    return rec


def iter_checked(
    path: str, required: Sequence[str], bad: BadRecords
) -> Iterable[tuple[str, dict[str, Any], ReasoningRecord]]:
    """``(file:line, record, its problem)`` for every usable record of a stage file."""
    for raw in read_records(path, key="stage.input"):
        try:
            data = raw.data
            missing = [k for k in required if k not in data]
            if missing:
                raise BadRecord(
                    "missing_fields",
                    f"missing field(s) {', '.join(map(repr, missing))} (keys: {sorted(data)})",
                )
            if not isinstance(data["correct"], bool):
                raise BadRecord(
                    "bad_correct", f"field 'correct' must be true or false, got {data['correct']!r}"
                )
            if not isinstance(data["response"], str):
                raise BadRecord("bad_response", "field 'response' must be a string")
            if not isinstance(data["prompt"], list) or not all(
                isinstance(m, Mapping) for m in data["prompt"]
            ):
                raise BadRecord("bad_prompt", "field 'prompt' must be a list of chat messages")
            problem = problem_from_dict(data["problem"], raw.location, str(data["problem_id"]))
        except BadRecord as e:
            bad.add(raw.location, e)
            continue
        yield raw.location, data, problem


def problem_payload(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a problem record that the later stages need."""
    return {k: obj[k] for k in ("id", "question", "answer", "choices", "task", "answer_type") if k in obj}


def dedup_correct(samples: Iterable[tuple[str, dict[str, Any], Any]]) -> tuple[list, int]:
    """Drop repeated correct solutions of a problem (same text after stripping white space; the first
    one stays), as the official code does; wrong samples are all kept. Returns (kept, dropped)."""
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], 0
    for item in samples:
        data = item[1]
        if data["correct"]:
            key = (str(data["problem_id"]), " ".join(data["response"].split()))
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
        kept.append(item)
    return kept, dropped
