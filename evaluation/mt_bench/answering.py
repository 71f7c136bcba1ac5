"""Multi-turn answering for MT-Bench: every question's turns answered in order by the model under test,
each turn with the history of its own earlier answers, all questions of a turn in batched calls (one
call per temperature), through the sample cache, so a rerun pays nothing twice.

``extend_questions`` is the MT-Bench++-style extension (METHODS.md §1): an Ask model writes follow-up
user turns for sessions with fewer than ``extend_to`` turns. Generated turns are marked in
``generated_turns``; the extended file is written once and reused, so every model under test answers
the same questions. These are model-written follow-ups, not the paper's human-written MT-Bench++ set.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from evaluation.mt_bench.fastchat_format import Question
from evaluation.mt_bench.temperatures import temperature_for
from inference.chat import NextTurn

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


def extend_questions(
    questions: Sequence[Question],
    extend_to: int,
    generator_for: GeneratorFor,
    ask_model: Any,
    temperatures: dict[str, float] | None = None,
) -> list[Question]:
    """Questions with follow-up turns written by ``ask_model`` up to ``extend_to`` turns (answers to
    earlier turns come from ``generator_for``, the model under test at extension time). An empty
    follow-up stops that question's extension (it keeps the turns it has)."""
    out = [
        Question(q.question_id, q.category, list(q.turns), q.reference, list(q.generated_turns))
        for q in questions
    ]
    answers: dict[Any, list[str]] = {q.question_id: [] for q in out}
    stopped: set[Any] = set()
    for turn in range(extend_to):
        answer_turn(out, answers, turn, generator_for, temperatures)
        need = [q for q in out if len(q.turns) == turn + 1 < extend_to and q.question_id not in stopped]
        if not need:
            continue
        prompts = [
            NextTurn(
                [
                    *history(q, answers[q.question_id], turn),
                    {"role": "assistant", "content": answers[q.question_id][turn]},
                ],
                role="user",
            )
            for q in need
        ]
        replies = ask_model.generate(prompts, ids=[str(q.question_id) for q in need])
        for q, completions in zip(need, replies):
            text = completions[0].text.strip()
            if not text:
                stopped.add(q.question_id)
                log.warning("mt_bench: the Ask model wrote an empty follow-up for question %s", q.question_id)
                continue
            q.generated_turns.append(len(q.turns))
            q.turns.append(text)
    return out
