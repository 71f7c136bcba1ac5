"""MT-Bench++-style extension, written once from a named source, so every model answers the same turns.

An Ask model (Parrot's user simulator) writes follow-up user turns for sessions with fewer than
``extend_to`` turns (METHODS.md §1). Each follow-up is conditioned on the history so far, whose answers
come from a *named source*, never from the model under test:

- the source's answers for the turns it has: the question's reference answers (default), or a FastChat
  ``model_answer`` file (``task.extend_from``);
- for every turn the source lacks (all extended turns), the reference model (``task.reference_model``,
  any backend), answering with that history. Its answer is also the reference answer of that turn where
  the question carries references (a reference category, or references on its original turns). Without
  a reference model only one follow-up can be written (the next one needs an answer to it), and extended
  turns have no reference: they are graded with the general prompt and marked so
  (:mod:`evaluation.mt_bench.grading`); an empty reference is never written.

Each extended question records what it was conditioned on (``extension.conditioned_on``: turn, source,
answer), the Ask and reference models, and which reference answers a model wrote. These are
model-written follow-ups, not the paper's human-written MT-Bench++ set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluation.mt_bench.answering import history
from evaluation.mt_bench.fastchat_format import Question
from evaluation.mt_bench.temperatures import REFERENCE_CATEGORIES
from inference.chat import NextTurn
from utils.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Source:
    """Named answers that follow-ups are conditioned on: question_id -> answer turns."""

    name: str
    answers: Mapping[Any, Sequence[str]] = field(default_factory=dict)

    def answer(self, question_id: Any, turn: int) -> str | None:
        got = self.answers.get(question_id) or []
        return got[turn] if turn < len(got) and got[turn].strip() else None


def check_source(questions: Sequence[Question], extend_to: int, source: Source, has_model: bool) -> None:
    """Without a reference model, every answer a follow-up needs must be in the source: one error naming
    the first question that lacks one."""
    if has_model:
        return
    for q in questions:
        if len(q.turns) >= extend_to:
            continue
        for turn in range(extend_to - 1):
            if source.answer(q.question_id, turn) is None:
                raise ConfigError(
                    [
                        f"task.extend_to={extend_to}: question {q.question_id} needs an answer to turn "
                        f"{turn + 1} to write the next follow-up, and {source.name} has none: set "
                        "task.reference_model (any backend; it answers the turns the source lacks and "
                        "writes the extended turns' reference answers)"
                    ]
                )


def _copy(q: Question) -> Question:
    return Question(q.question_id, q.category, list(q.turns), q.reference, list(q.generated_turns))


@dataclass
class _State:
    q: Question
    answers: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    stopped: bool = False


def _answer_turn(states: Sequence[_State], turn: int, source: Source, model: Any, model_name: str) -> None:
    """The conditioning answer of ``turn`` (from 0) for every live session that has the turn."""
    need = []
    for s in states:
        if s.stopped or len(s.q.turns) <= turn or len(s.answers) != turn:
            continue
        if (got := source.answer(s.q.question_id, turn)) is not None:
            s.answers.append(got)
            s.sources.append(source.name)
        elif model is not None:
            need.append(s)
        else:
            s.stopped = True  # the source has no answer and there is no model: no further follow-ups
    if need:
        replies = model.generate(
            [history(s.q, s.answers, turn) for s in need], ids=[f"{s.q.question_id}:{turn}" for s in need]
        )
        for s, completions in zip(need, replies):
            s.answers.append(completions[0].text.strip())
            s.sources.append(model_name)


def _ask(states: Sequence[_State], turn: int, extend_to: int, ask_model: Any) -> None:
    """A follow-up user turn after ``turn`` for every session that ends there and should go on."""
    need = [
        s
        for s in states
        if not s.stopped and len(s.q.turns) == turn + 1 < extend_to and len(s.answers) > turn
    ]
    if not need:
        return
    prompts = [
        NextTurn(
            [*history(s.q, s.answers, turn), {"role": "assistant", "content": s.answers[turn]}], role="user"
        )
        for s in need
    ]
    replies = ask_model.generate(prompts, ids=[str(s.q.question_id) for s in need])
    for s, completions in zip(need, replies):
        text = completions[0].text.strip()
        if not text:
            s.stopped = True
            log.warning("mt_bench: the Ask model wrote an empty follow-up for question %s", s.q.question_id)
            continue
        s.q.generated_turns.append(len(s.q.turns))
        s.q.turns.append(text)


def _references(s: _State, model_name: str) -> tuple[list[str] | None, list[int]]:
    """The question's references, with the reference model's answers for the turns that lack one, as
    far as they run without a gap; and the (1-based) turns whose reference the model wrote."""
    q = s.q
    original = list(q.reference or [])
    if not (q.category in REFERENCE_CATEGORIES or original):
        return q.reference, []
    refs, by_model = [], []
    for turn in range(len(q.turns)):
        if turn < len(original) and original[turn].strip():
            refs.append(original[turn])
        elif turn < len(s.answers) and s.sources[turn] == model_name:
            refs.append(s.answers[turn])
            by_model.append(turn + 1)
        else:
            break
    return refs or None, by_model


def extend_questions(
    questions: Sequence[Question],
    extend_to: int,
    ask_model: Any,
    source: Source,
    reference_model: Any = None,
    names: Mapping[str, str] | None = None,
) -> list[Question]:
    """Questions extended to ``extend_to`` turns; the input is left as it was. ``names`` gives the
    ``ask_model`` and ``reference_model`` labels recorded in each extended question."""
    names = dict(names or {})
    ref_name = names.get("reference_model", "reference_model")
    check_source(questions, extend_to, source, reference_model is not None)
    states = [_State(_copy(q)) for q in questions]
    active = [s for s in states if len(s.q.turns) < extend_to]
    for turn in range(extend_to):
        _answer_turn(active, turn, source, reference_model, ref_name)
        _ask(active, turn, extend_to, ask_model)
    for s in active:
        s.q.reference, by_model = _references(s, ref_name)
        s.q.extension = {
            "source": source.name,
            "ask_model": names.get("ask_model", "ask_model"),
            "reference_model": ref_name if reference_model is not None else None,
            "conditioned_on": [
                {"turn": t + 1, "from": src, "answer": a}
                for t, (src, a) in enumerate(zip(s.sources, s.answers))
            ],
            "references_by_model": by_model,
        }
    return [s.q for s in states]
