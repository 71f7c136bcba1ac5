"""Chat templating and token counting for HF tokenizers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference.backends.base import Message, Prompt, is_chat_prompt, validate_messages


class ChatTemplateMissingError(ValueError):
    """Chat mode was requested but the tokenizer has no chat template."""


def user_messages(text: str, system: str | None = None) -> list[dict[str, str]]:
    """A one-turn chat prompt (optionally with a system message)."""
    msgs = [] if system is None else [{"role": "system", "content": system}]
    msgs.append({"role": "user", "content": text})
    return msgs


def has_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def apply_chat_template(tokenizer: Any, messages: Sequence[Message]) -> str:
    """Render messages with the tokenizer's chat template, ending with the assistant generation prompt.

    Raises:
        ChatTemplateMissingError: the tokenizer has no chat template; the message says how to fix it.
    """
    validate_messages(messages)
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ChatTemplateMissingError(
            f"Chat prompts were requested but tokenizer '{name}' has no chat_template. Either use a "
            "tokenizer that ships one (tokenizer_config.json / chat_template.jinja), set "
            "tokenizer.chat_template, or turn chat mode off to send raw prompts."
        )
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    if not isinstance(text, str):
        raise TypeError("apply_chat_template(tokenize=False) did not return a string")
    return text


def render_prompt(tokenizer: Any, prompt: Prompt) -> tuple[str, bool]:
    """Text to feed the model, and whether special tokens still need to be added when encoding.

    Raw strings are encoded with the tokenizer's usual special tokens (e.g. BOS); a rendered chat
    template already contains them.
    """
    if is_chat_prompt(prompt):
        return apply_chat_template(tokenizer, prompt), False
    return str(prompt), True


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids for a raw or chat prompt."""
    text, add_special = render_prompt(tokenizer, prompt)
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


def count_tokens(tokenizer: Any, text: str) -> int:
    """Number of tokens in ``text`` without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
