"""Multi-turn answering for MT-Bench: every question's turns answered in order by the model under test,
each turn with the history of its own earlier answers, all questions of a turn in batched calls (one
call per temperature), through the sample cache, so a rerun pays nothing twice.

The MT-Bench++-style extension (follow-up turns written once, from a named source) is
:mod:`evaluation.mt_bench.extension`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from evaluation.mt_bench.fastchat_format import Question
from evaluation.mt_bench.temperatures import temperature_for

log = logging.getLogger(__name__)

#: temperature -> a generator: ``generate(prompts, ids) -> completion groups``.
GeneratorFor = Callable[[float], Any]


def history(question: Question, answers: Sequence[str], turn: int) -> list[dict[str, str]]:
    """Messages up to the user's ``turn``-th query (from 0), with the model's own earlier answers."""
    msgs: list[dict[str, str]] = []
    for i in range(turn):
        msgs += [{"role": "user", "content": question.turns[i]}, {"role": "assistant", "content": answers[i]}]
    return msgs + [{"role": "user", "content": question.turns[turn]}]


def answer_turn(
    questions: Sequence[Question],
    answers: dict[Any, list[str]],
    turn: int,
    generator_for: GeneratorFor,
    temperatures: dict[str, float] | None = None,
) -> int:
    """Answer turn ``turn`` (from 0) of every question that has it and is not answered yet; one batched
    call per temperature. Returns the number of answers made."""
    by_temperature: dict[float, list[Question]] = defaultdict(list)
    for q in questions:
        if turn < len(q.turns) and len(answers[q.question_id]) == turn:
            by_temperature[temperature_for(q.category, temperatures)].append(q)
    for temperature, group in sorted(by_temperature.items()):
        prompts = [history(q, answers[q.question_id], turn) for q in group]
        replies = generator_for(temperature).generate(prompts, ids=[str(q.question_id) for q in group])
        for q, completions in zip(group, replies):
            answers[q.question_id].append(completions[0].text.strip())
    return sum(len(g) for g in by_temperature.values())


def answer_all(
    questions: Sequence[Question], generator_for: GeneratorFor, temperatures: dict[str, float] | None = None
) -> dict[Any, list[str]]:
    """Every turn of every question, turn by turn."""
    answers: dict[Any, list[str]] = {q.question_id: [] for q in questions}
    for turn in range(max(len(q.turns) for q in questions)):
        n = answer_turn(questions, answers, turn, generator_for, temperatures)
        log.info("mt_bench: answered turn %d of %d questions", turn + 1, n)
    return answers
