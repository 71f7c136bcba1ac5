"""Chat templating and token counting for HF tokenizers.

Besides the usual assistant generation prompt (:func:`apply_chat_template`), :func:`render_next_turn`
opens a turn of *any* role, so a model can write the next user turn (the Parrot Ask model, a user
simulator): see its docstring. A :class:`NextTurn` prompt asks an HF backend for exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError, TemplateError

from inference.backends.base import Message, Prompt, is_chat_prompt, validate_messages
from utils.errors import DataError, QuartetError, first_line


class ChatTemplateMissingError(QuartetError, ValueError):
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
    try:
        text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    except SecurityError as e:
        raise unsafe_template_error(_template_name(tokenizer), e) from None
    except TemplateError as e:  # e.g. model.chat_template calls raise_exception(...)
        roles = [m["role"] for m in messages]
        raise ChatTemplateRoleError(
            f"the chat template of '{_template_name(tokenizer)}' rejects a prompt with roles {roles}: {e}"
        ) from None
    if not isinstance(text, str):
        raise TypeError("apply_chat_template(tokenize=False) did not return a string")
    return text


def unsafe_template_error(name: str, e: SecurityError) -> DataError:
    """A template that reaches outside Jinja's sandbox (transformers renders templates sandboxed, which
    stops it): one ``DataError`` line naming the template, not a traceback."""
    return DataError(
        f"the chat template of '{name}' tries to leave Jinja's sandbox and was stopped ({first_line(e)}); "
        "fix model.chat_template or the tokenizer's chat_template"
    )


class ChatTemplateRoleError(QuartetError, ValueError):
    """The chat template cannot render a turn of the requested role after the given history."""


#: The roles :func:`render_next_turn` can open.
TURN_ROLES = ("system", "user", "assistant")
#: Content of the stand-in turn that :func:`render_next_turn` renders and then cuts off. Plain
#: letters, so templates that ``trim`` or escape content leave it as it is.
TURN_PLACEHOLDER = "QuartetNextTurnPlaceholder7f3a9c"


@dataclass(frozen=True)
class NextTurn:
    """A prompt asking for the next turn of ``role`` after ``messages`` (``"user"`` for a user
    simulator). The HF backend renders it with :func:`render_next_turn`; backends that only speak a
    chat API reject it (they can't open a user turn)."""

    messages: tuple[dict[str, str], ...]
    role: str = "user"

    def __init__(self, messages: Sequence[Message], role: str = "user") -> None:
        object.__setattr__(self, "messages", tuple(dict(m) for m in messages))
        object.__setattr__(self, "role", role)

    def to_dict(self) -> dict[str, Any]:
        return {"next_turn": self.role, "messages": [dict(m) for m in self.messages]}


def _template_name(tokenizer: Any) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def render_next_turn(tokenizer: Any, history: Sequence[Message], role: str) -> str:
    """The text of ``history`` followed by the opening of a ``role`` turn, ready for generation.

    The template renders ``history`` plus a stand-in turn ``{"role": role, "content":
    TURN_PLACEHOLDER}``; the text is cut where the stand-in content starts. So the result is whatever
    the template itself writes before a turn of that role: its header (``<|user|>\n``,
    ``<|im_start|>user\n``), a default system prompt the template injects when the history has none,
    and the BOS token if the template writes one. Encode it with ``add_special_tokens=False``
    (:func:`encode_next_turn`) so no second BOS is added. For ``role="assistant"`` the template's own
    generation prompt is used (``add_generation_prompt=True``); for well-behaved templates the two
    agree.

    ``history`` may be empty (the first turn). Raises :class:`ChatTemplateRoleError` when the template
    refuses that role order (e.g. templates that ``raise_exception`` unless user/assistant alternate)
    or drops the turn's content, and :class:`ChatTemplateMissingError` when there is no template.
    """
    if role not in TURN_ROLES:
        raise ValueError(f"role must be one of {list(TURN_ROLES)}, got {role!r}")
    if history:
        validate_messages(history)
    if not has_chat_template(tokenizer):
        raise ChatTemplateMissingError(
            f"tokenizer '{_template_name(tokenizer)}' has no chat_template, so it can't open a '{role}' turn"
        )
    if role == "assistant" and history:
        return apply_chat_template(tokenizer, history)
    roles = [m["role"] for m in history]
    messages = [*(dict(m) for m in history), {"role": role, "content": TURN_PLACEHOLDER}]
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    except SecurityError as e:
        raise unsafe_template_error(_template_name(tokenizer), e) from None
    except Exception as e:  # noqa: BLE001 - jinja2's TemplateError or whatever the template raises
        raise ChatTemplateRoleError(
            f"the chat template of '{_template_name(tokenizer)}' cannot render a '{role}' turn after "
            f"roles {roles}: {type(e).__name__}: {e}"
        ) from None
    cut = text.find(TURN_PLACEHOLDER) if isinstance(text, str) else -1
    if cut < 0:
        raise ChatTemplateRoleError(
            f"the chat template of '{_template_name(tokenizer)}' drops the content of a '{role}' turn after "
            f"roles {roles}, so it can't open one"
        )
    return text[:cut]


def encode_next_turn(tokenizer: Any, history: Sequence[Message], role: str) -> list[int]:
    """Token ids of :func:`render_next_turn`: the template's own special tokens only (one BOS at
    most, where the template writes it)."""
    text = render_next_turn(tokenizer, history, role)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_prompt(tokenizer: Any, prompt: Prompt | NextTurn) -> tuple[str, bool]:
    """Text to feed the model, and whether special tokens still need to be added when encoding.

    Raw strings are encoded with the tokenizer's usual special tokens (e.g. BOS); a rendered chat
    template (chat messages, or a :class:`NextTurn`) already contains them.
    """
    if isinstance(prompt, NextTurn):
        return render_next_turn(tokenizer, prompt.messages, prompt.role), False
    if is_chat_prompt(prompt):
        return apply_chat_template(tokenizer, prompt), False
    return str(prompt), True


def encode_prompt(tokenizer: Any, prompt: Prompt | NextTurn) -> list[int]:
    """Token ids for a raw or chat prompt."""
    text, add_special = render_prompt(tokenizer, prompt)
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


def count_tokens(tokenizer: Any, text: str) -> int:
    """Number of tokens in ``text`` without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
