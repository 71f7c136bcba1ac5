"""The corrupted contexts a generator answers under, to make CaPO's rejected answers (METHODS.md §1).

For a context-dependent user turn with system messages S, history H (earlier user/assistant turns)
and query q, the generator sees:

- ``neglect``: S + [q]: the history is removed.
- ``hallucination``: S + instruction + [q]: the history is removed and the model is told to guess
  what the query refers to instead of asking.
- ``misunderstanding``: S + instruction + [a distractor exchange] + [q]: only an earlier, irrelevant
  exchange of H is kept (never the most recent one, which the query usually refers to), and the
  instruction steers the model to it. Needs at least two earlier exchanges.
- ``history_swap`` (extra): S + H' + [q], where H' is the same number of exchanges taken from another
  dialogue.

The chosen answer is always the dialogue's own answer to q, and training scores both answers under the
true context S + H + [q]. The instruction text is configurable; it goes into the system message
(appended to an existing one) or, with ``placement="user"``, in front of the query.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from stages.common import Message

CORRUPTIONS = ("neglect", "hallucination", "misunderstanding", "history_swap")
#: The paper's three (the default of ``stage.corruptions``); ``history_swap`` is Quartet's opt-in extra.
PAPER_CORRUPTIONS = CORRUPTIONS[:3]
HALLUCINATION_INSTRUCTION = (
    "The user's message continues an earlier conversation that you cannot see. Do not ask what they "
    "mean: guess what they are referring to and answer directly and confidently."
)
MISUNDERSTANDING_INSTRUCTION = (
    'The user\'s next message is about this earlier request: "{distractor}". Answer it with that in mind.'
)


@dataclass(frozen=True)
class Turn:
    """A user turn to make negatives for, with everything before it and the original answer."""

    dialogue_id: str
    location: str
    system: list[Message]
    history: list[Message]  # user/assistant messages before the query (no system messages)
    query: str
    answer: str
    message_index: int  # index of the query in the dialogue's messages
    user_turn: int  # 0-based count of user turns before it
    cues: tuple[str, ...] = ()

    @property
    def context(self) -> list[Message]:
        """The true full context: S + H + [q]."""
        return [*self.system, *self.history, {"role": "user", "content": self.query}]

    def exchanges(self) -> list[list[Message]]:
        """H as a list of exchanges, each a user message and the assistant messages after it."""
        out: list[list[Message]] = []
        for m in self.history:
            if m["role"] == "user" or not out:
                out.append([m])
            else:
                out[-1].append(m)
        return out


@dataclass(frozen=True)
class CorruptedPrompt:
    neg_type: str
    messages: list[Message]
    meta: dict[str, Any] = field(default_factory=dict)


def with_instruction(system: list[Message], query: str, instruction: str, placement: str) -> list[Message]:
    """S + [q] with ``instruction`` added: into the (first) system message, or before the query."""
    if placement == "user":
        return [*system, {"role": "user", "content": f"{instruction}\n\n{query}"}]
    if system:
        first = {"role": "system", "content": f"{system[0]['content']}\n\n{instruction}"}
        return [first, *system[1:], {"role": "user", "content": query}]
    return [{"role": "system", "content": instruction}, {"role": "user", "content": query}]


def neglect(turn: Turn) -> CorruptedPrompt:
    return CorruptedPrompt("neglect", [*turn.system, {"role": "user", "content": turn.query}])


def hallucination(
    turn: Turn, instruction: str = HALLUCINATION_INSTRUCTION, placement: str = "system"
) -> CorruptedPrompt:
    return CorruptedPrompt("hallucination", with_instruction(turn.system, turn.query, instruction, placement))


def misunderstanding(
    turn: Turn,
    rng: random.Random,
    instruction: str = MISUNDERSTANDING_INSTRUCTION,
    placement: str = "system",
    max_quote_chars: int = 300,
) -> CorruptedPrompt | None:
    """None when the history has fewer than two exchanges (nothing irrelevant to steer to)."""
    exchanges = turn.exchanges()
    if len(exchanges) < 2:
        return None
    k = rng.randrange(len(exchanges) - 1)  # never the most recent exchange
    distractor = exchanges[k]
    quote = distractor[0]["content"].strip().replace("\n", " ")
    if len(quote) > max_quote_chars:
        quote = quote[: max_quote_chars - 3] + "..."
    text = instruction.format(distractor=quote)
    head = with_instruction(turn.system, turn.query, text, placement)
    messages = [*head[:-1], *distractor, head[-1]]
    return CorruptedPrompt("misunderstanding", messages, {"distractor_exchange": k})


def history_swap(turn: Turn, donor: Turn | list[Message], donor_id: str) -> CorruptedPrompt | None:
    """The query after another dialogue's first exchanges (as many as ``turn`` has, when the donor has
    that many). ``donor`` is a Turn or that dialogue's user/assistant messages. None when the donor has
    no complete exchange."""
    messages = donor.history if isinstance(donor, Turn) else [m for m in donor if m["role"] != "system"]
    want = max(1, len(turn.exchanges()))
    taken: list[Message] = []
    n = 0
    for i, m in enumerate(messages):
        if m["role"] == "user":
            if n == want:
                break
            nxt = messages[i + 1] if i + 1 < len(messages) else None
            if nxt is None or nxt["role"] != "assistant":
                break
            n += 1
        taken.append(m)
    while taken and taken[-1]["role"] != "assistant":
        taken.pop()
    if not taken:
        return None
    prompt = [*turn.system, *taken, {"role": "user", "content": turn.query}]
    return CorruptedPrompt("history_swap", prompt, {"donor_dialogue_id": donor_id, "donor_exchanges": n})
