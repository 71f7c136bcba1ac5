"""The backend interface every generator implements (HF, vLLM, OpenAI-compatible HTTP, test fakes).

A *prompt* is either a plain string (raw completion mode, no chat template) or a list of chat
messages ``[{"role": ..., "content": ...}, ...]`` (chat mode: the backend applies the model's chat
template, or sends the messages to a chat endpoint).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from inference.sampling import SamplingParams

Message = Mapping[str, str]
Prompt = str | Sequence[Message]


@dataclass
class Completion:
    """One generated continuation.

    Attributes:
        text: the generated text, cut before the first stop string, special tokens removed.
        prompt_tokens: tokens in the prompt (after chat templating). The prompt is processed once per
            request, so this number is the same for all n completions of a prompt and must be counted
            once per request when summing costs.
        completion_tokens: tokens the model produced for this completion (EOS included).
        finish_reason: ``"eos"``, ``"stop"`` (stop string) or ``"length"``.
        tokens_estimated: True when the backend only reported a total for the n completions and the
            per-completion split is an estimate (the total stays exact).
        prompt_shared: True when one prompt pass served all n completions of the request (HF shared
            prefill, OpenAI ``n``); False when each completion paid for its own prompt.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "eos"
    tokens_estimated: bool = False
    prompt_shared: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Completion:
        return cls(
            text=str(d["text"]),
            prompt_tokens=int(d["prompt_tokens"]),
            completion_tokens=int(d["completion_tokens"]),
            finish_reason=str(d.get("finish_reason", "eos")),
            tokens_estimated=bool(d.get("tokens_estimated", False)),
            prompt_shared=bool(d.get("prompt_shared", True)),
        )


def group_token_cost(group: Sequence[Completion]) -> dict[str, int]:
    """Prompt, completion and total tokens spent on one request's completions.

    A shared prompt is counted once for the whole group; an unshared one once per completion.
    """
    if not group:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    prompt = sum(c.prompt_tokens for c in group if not c.prompt_shared)
    shared = [c.prompt_tokens for c in group if c.prompt_shared]
    prompt += max(shared) if shared else 0
    completion = sum(c.completion_tokens for c in group)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def is_chat_prompt(prompt: Prompt) -> bool:
    """True for a list of chat messages, False for a raw string."""
    if isinstance(prompt, str):
        return False
    if isinstance(prompt, Sequence) and all(isinstance(m, Mapping) for m in prompt):
        return True
    raise TypeError(f"A prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def validate_messages(messages: Sequence[Message]) -> None:
    """Raise a clear error on malformed chat messages."""
    if len(messages) == 0:
        raise ValueError("A chat prompt needs at least one message.")
    for i, m in enumerate(messages):
        if "role" not in m or "content" not in m:
            raise ValueError(f"Chat message {i} needs 'role' and 'content' keys, got keys {sorted(m)}")


class GenerationBackend(ABC):
    """Turns prompts into completions.

    Subclasses implement :meth:`generate`; ``model_id`` names the model for cache keys and results.
    """

    #: Stable name of the model (path, served model name...), part of the sample-cache key.
    model_id: str = "unknown"

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """Return ``params.n`` completions for each prompt, in prompt order."""

    def describe(self) -> dict[str, Any]:
        """Backend settings recorded with results (never secrets)."""
        return {"backend": type(self).__name__, "model_id": self.model_id}

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release resources (default: nothing)."""
