"""The Parrot dialogue rollout loop (arXiv 2310.07301; METHODS.md §1 "Dialogue rollout").

1. Start every session from a seed first query.
2. The answer model replies.
3. The Ask model writes the next *user* query from the whole history.
4. Repeat to ``turns`` user turns, filtering repeated, too-short and looping turns (``filters``).

All sessions advance together, one turn at a time: each step sends the prompts of every live session to
the model in one batched call (chunked by the generator's ``chunk_size``), so a rollout of S sessions and
T turns costs about 2T batched calls, not 2ST single ones.

What the Ask model sees (``ask_prompt``):
- ``next_turn`` (default): the history in its true roles, followed by the opening of a *user* turn
  (:class:`inference.chat.NextTurn`), which is how an Ask model trained with ``data=ask`` (loss on user
  turns) was trained to continue. Needs a backend that renders templates itself (HF).
- ``swap_roles``: the history with user and assistant swapped, answered as an assistant turn, so any chat
  endpoint (OpenAI-compatible, vLLM chat) can play the user; ``ask_system_prompt`` goes first if set.

Both generators answer through the sample cache (``inference.generation_cache``), keyed by the session
id and the prompt, so a killed rollout started again replays finished turns from the cache and its
output equals an uninterrupted run's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inference.chat import NextTurn
from stages.parrot_rollout.filters import RolloutFilters, query_problem, reply_problem

Message = dict[str, str]
ASK_PROMPTS = ("next_turn", "swap_roles")


@dataclass
class Session:
    """One dialogue being collected. ``end_reason`` is ``"turns"`` when it reached the target, else the
    filter reason that ended it."""

    id: str
    messages: list[Message]
    source: str = ""
    end_reason: str | None = None
    generated_queries: int = 0

    @property
    def live(self) -> bool:
        return self.end_reason is None

    def contents(self, role: str) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == role]

    def user_turns(self) -> int:
        return sum(m["role"] == "user" for m in self.messages)


def swapped_roles(messages: Sequence[Message], system_prompt: str | None = None) -> list[Message]:
    """The history as the Ask model sees it through a chat endpoint: user <-> assistant, system dropped
    (replaced by ``system_prompt`` if given)."""
    flip = {"user": "assistant", "assistant": "user"}
    out = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return out + [{"role": flip[m["role"]], "content": m["content"]} for m in messages if m["role"] in flip]


def ask_prompt(session: Session, mode: str, system_prompt: str | None = None) -> Any:
    if mode == "next_turn":
        return NextTurn(session.messages, role="user")
    if mode == "swap_roles":
        return swapped_roles(session.messages, system_prompt)
    raise ValueError(f"stage.ask_prompt={mode!r} must be one of {list(ASK_PROMPTS)}")


@dataclass
class RolloutResult:
    sessions: list[Session]
    rejected: Counter = field(default_factory=Counter)

    def kept(self) -> list[Session]:
        """Sessions with at least one complete (query, reply) turn."""
        return [s for s in self.sessions if s.contents("assistant")]


def _answer_step(
    sessions: list[Session], answer_model: Any, filters: RolloutFilters, rejected: Counter
) -> None:
    live = [s for s in sessions if s.live]
    if not live:
        return
    groups = answer_model.generate([list(s.messages) for s in live], ids=[s.id for s in live])
    for s, group in zip(live, groups):
        reply = group[0]
        problem = reply_problem(reply.text, reply.finish_reason, s.contents("assistant"), filters)
        if problem:
            rejected[problem] += 1
            s.messages.pop()  # the unanswered query goes with its reply
            s.end_reason = problem
        else:
            s.messages.append({"role": "assistant", "content": reply.text.strip()})


def _ask_step(
    sessions: list[Session],
    ask_model: Any,
    filters: RolloutFilters,
    rejected: Counter,
    mode: str,
    system: str | None,
) -> None:
    live = [s for s in sessions if s.live]
    if not live:
        return
    groups = ask_model.generate([ask_prompt(s, mode, system) for s in live], ids=[s.id for s in live])
    for s, group in zip(live, groups):
        query = group[0]
        problem = "cut_off_query" if filters.reject_cut_off and query.finish_reason == "length" else None
        problem = problem or query_problem(query.text, s.contents("user"), filters)
        if problem:
            rejected[problem] += 1
            s.end_reason = problem
        else:
            s.messages.append({"role": "user", "content": query.text.strip()})
            s.generated_queries += 1


def roll_out(
    sessions: list[Session],
    answer_model: Any,
    ask_model: Any,
    turns: int = 8,
    filters: RolloutFilters | None = None,
    ask_mode: str = "next_turn",
    ask_system_prompt: str | None = None,
    progress: Any = None,
) -> RolloutResult:
    """Advance every session to ``turns`` user turns (each session starts with its seed query as the
    last message). ``answer_model`` and ``ask_model`` are generators with ``generate(prompts, ids)``
    returning completion groups (:class:`inference.generation_cache.CachedGenerator`)."""
    if turns < 1:
        raise ValueError(f"stage.turns={turns} must be at least 1")
    filters = filters or RolloutFilters()
    rejected: Counter = Counter()
    for turn in range(1, turns + 1):
        _answer_step(sessions, answer_model, filters, rejected)
        if turn < turns:
            _ask_step(sessions, ask_model, filters, rejected, ask_mode, ask_system_prompt)
        if progress is not None:
            progress(turn, sum(s.live for s in sessions))
    for s in sessions:
        if s.live:
            s.end_reason = "turns"
    return RolloutResult(sessions, rejected)
