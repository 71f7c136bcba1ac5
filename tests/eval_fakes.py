"""A deterministic fake generation backend and a small question set for the eval tests.

Every output is a function of the prompt text alone (a hash), as with a seeded real model, so results
do not depend on how questions are batched or sharded between ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from inference.backends.base import Completion, GenerationBackend, Prompt
from inference.sampling import SamplingParams
from reasoning.questions import ReasoningRecord


def _h(*parts: object) -> int:
    return int(hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def questions(n: int = 11) -> list[ReasoningRecord]:
    """``n`` arithmetic questions plus a few yes/no ones (a mixed pool)."""
    out = [
        ReasoningRecord(
            id=f"a{i}",
            question=f"What is {i} + {i + 1}?",
            gold=str(2 * i + 1),
            answer_type="number",
            task="arith",
        )
        for i in range(n)
    ]
    out += [
        ReasoningRecord(
            id=f"y{i}",
            question=f"Is {i} even?",
            gold="yes" if i % 2 == 0 else "no",
            answer_type="yesno",
            task="yesno",
        )
        for i in range(3)
    ]
    return out


class HashBackend(GenerationBackend):
    """Answers come from a hash of (prompt, sample index): right about half the time, sometimes unparsable."""

    model_id = "hash-model"

    def __init__(self) -> None:
        self.prompts = 0

    @staticmethod
    def _text(prompt: str, j: int) -> str:
        h = _h(prompt, j)
        if h % 7 == 0:
            return "I am not sure."
        if "Is " in prompt and "even" in prompt:
            return f"The answer is {'yes' if h % 2 else 'no'}."
        a = prompt.split("What is ")[-1].split("?")[0]
        try:
            x, y = (int(t) for t in a.split(" + "))
        except ValueError:
            return "The answer is 0."
        return f"{x} + {y} = {x + y + (h % 3 == 0)}. The answer is {x + y + (h % 3 == 0)}."

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.prompts += len(prompts)
        out = []
        for p in prompts:
            text = p if isinstance(p, str) else p[-1]["content"]
            seed = params.seed if not params.greedy else "greedy"
            texts = [self._text(f"{seed}|{text}", j) for j in range(params.n)]
            out.append(
                [
                    Completion(t, prompt_tokens=len(text.split()), completion_tokens=len(t.split()))
                    for t in texts
                ]
            )
        return out
