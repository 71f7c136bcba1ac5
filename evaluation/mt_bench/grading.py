"""Grading every turn of every session on its own answer, single-answer or pairwise (FastChat's modes).

Turn k of a session is graded with the whole history before it and answer k in the graded position
(:mod:`evaluation.mt_bench.judge_prompts`, :mod:`evaluation.mt_bench.template_turns`). The prompt is
the reference (``math``) prompt where the question's category is a reference category (math,
reasoning, coding; every category for the stand-in judge) *and* turns 1..k all have a reference answer;
a reference-category turn without one is graded with the general prompt and its record says so
(``"graded_without_reference": true``): an empty reference is never shown to the judge.

Every record keeps the exact judge messages (``system_prompt``, ``user_prompt``) and the judge's reply
(``judgment``), as FastChat's ``model_judgment`` files do, so any grade can be audited.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evaluation.mt_bench.fastchat_format import Question, judgment_record
from evaluation.mt_bench.judge_prompts import (
    JudgePrompt,
    has_reference,
    judge_messages,
    pair_messages,
    prompt_name,
)
from evaluation.mt_bench.pairwise import Match, game_winners, pair_record
from evaluation.mt_bench.temperatures import REFERENCE_CATEGORIES

#: A judge: chat prompts in, verdicts (``.value``, ``.text``) out (``evaluation.judges.Judge``).
JudgeFn = Callable[[Sequence[Sequence[dict[str, str]]]], Sequence[Any]]


def choose_prompt(q: Question, turn: int, pairwise: bool, force_reference: bool = False) -> tuple[str, bool]:
    """(FastChat prompt name, graded without its reference) for turn ``turn`` (from 1) of ``q``."""
    wants_reference = force_reference or q.category in REFERENCE_CATEGORIES
    use = wants_reference and has_reference(q.reference, turn)
    return prompt_name(q.category, turn, pairwise, reference=use), wants_reference and not use


def needed_prompts(
    questions: Sequence[Question], pairwise: bool, force_reference: bool = False
) -> list[tuple[str, int]]:
    """Every (prompt name, turn) grading ``questions`` needs, once each, in order of first need."""
    seen: dict[tuple[str, int], None] = {}
    for q in questions:
        for turn in range(1, len(q.turns) + 1):
            seen.setdefault((choose_prompt(q, turn, pairwise, force_reference)[0], turn), None)
    return list(seen)


def needed_after_extension(
    questions: Sequence[Question], extend_to: int, pairwise: bool, force_reference: bool = False
) -> list[tuple[str, int]]:
    """What :func:`needed_prompts` may ask for once ``questions`` are extended to ``extend_to`` turns
    (extended turns with or without references), to check a prompt file before the extension runs."""
    probes = []
    for q in questions:
        if len(q.turns) >= extend_to:
            probes.append(q)
            continue
        turns = [*q.turns, *[""] * (extend_to - len(q.turns))]
        probes += [
            Question(q.question_id, q.category, turns, q.reference),
            Question(q.question_id, q.category, turns, ["r"] * extend_to),
        ]
    return needed_prompts(probes, pairwise, force_reference)


def _mark(record: dict[str, Any], system: str, without_reference: bool) -> dict[str, Any]:
    record["system_prompt"] = system
    if without_reference:
        record["graded_without_reference"] = True
    return record


def grade_single(
    judge: JudgeFn,
    judge_name: str,
    prompts: Mapping[str, JudgePrompt],
    questions: Sequence[Question],
    answers: Mapping[Any, Sequence[str]],
    model_id: str,
    force_reference: bool = False,
) -> list[dict[str, Any]]:
    """One ``<judge>_single.jsonl`` record per answered turn, in question then turn order."""
    items = []
    for q in questions:
        for turn in range(1, min(len(q.turns), len(answers[q.question_id])) + 1):
            name, without = choose_prompt(q, turn, False, force_reference)
            msgs = judge_messages(prompts[name], q.turns, answers[q.question_id], turn, q.reference)
            items.append((q, turn, prompts[name].name, without, msgs))
    verdicts = judge([msgs for *_, msgs in items])
    return [
        _mark(
            judgment_record(
                q.question_id, model_id, (judge_name, pname), msgs[-1]["content"], v.text, v.value, turn
            ),
            msgs[0]["content"] if len(msgs) > 1 else "",
            without,
        )
        for (q, turn, pname, without, msgs), v in zip(items, verdicts)
    ]


def grade_pairs(
    judge: JudgeFn,
    judge_name: str,
    prompts: Mapping[str, JudgePrompt],
    questions: Sequence[Question],
    answers: Mapping[str, Mapping[Any, Sequence[str]]],
    pairs: Sequence[tuple[str, str]],
    force_reference: bool = False,
) -> list[dict[str, Any]]:
    """One ``<judge>_pair.jsonl`` record per (pair, question, turn), each judged in both orders: game 1
    with model_1 as A, game 2 with model_2 as A."""
    items = []
    for m1, m2 in pairs:
        for q in questions:
            a1, a2 = answers[m1][q.question_id], answers[m2][q.question_id]
            for turn in range(1, min(len(q.turns), len(a1), len(a2)) + 1):
                name, without = choose_prompt(q, turn, True, force_reference)
                g1 = pair_messages(prompts[name], q.turns, a1, a2, turn, q.reference)
                g2 = pair_messages(prompts[name], q.turns, a2, a1, turn, q.reference)
                items.append((Match(q.question_id, turn, m1, m2), prompts[name].name, without, g1, g2))
    verdicts = judge([msgs for item in items for msgs in item[3:]])
    records = []
    for i, (match, pname, without, g1, g2) in enumerate(items):
        v1, v2 = verdicts[2 * i], verdicts[2 * i + 1]
        games = [(g1[-1]["content"], v1.text), (g2[-1]["content"], v2.text)]
        record = pair_record(match, (judge_name, pname), games, game_winners(v1.value, v2.value))
        records.append(_mark(record, g1[0]["content"] if len(g1) > 1 else "", without))
    return records
