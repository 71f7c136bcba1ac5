"""A scripted generation backend for judge, stage and cache tests: replies come from a function of the
prompt, and every call is recorded."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from inference.backends.base import Completion, GenerationBackend, Prompt
from inference.sampling import SamplingParams


def last_content(prompt: Prompt) -> str:
    """The text of a raw prompt, or the last message's content of a chat prompt."""
    return prompt if isinstance(prompt, str) else str(prompt[-1]["content"])


class ScriptedBackend(GenerationBackend):
    """``reply(prompt) -> text`` (or ``(text, finish_reason)``) for every prompt; ``calls`` holds the prompts
    of each ``generate`` call."""

    def __init__(self, reply: Callable[[Prompt], str], model_id: str = "scripted") -> None:
        self.reply = reply
        self.model_id = model_id
        self.calls: list[list[Prompt]] = []

    @property
    def prompts_seen(self) -> int:
        return sum(len(c) for c in self.calls)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append(list(prompts))
        out = []
        for p in prompts:
            reply = self.reply(p)
            text, finish = reply if isinstance(reply, tuple) else (reply, "eos")
            out.append(
                [
                    Completion(text=text, prompt_tokens=1, completion_tokens=1, finish_reason=finish)
                    for _ in range(params.n)
                ]
            )
        return out
