"""Normalise preference records to one shape, :class:`PreferencePair`, validated.

Accepted formats (DESIGN.md, "Data formats"):

- Quartet / CaPO: ``{"messages": [... context ending in a user turn], "chosen": ..., "rejected": ...,
  "neg_type": ...}``; the context may also be ShareGPT ``conversations``. ``chosen``/``rejected`` are
  a string, an assistant message ``{"role": "assistant", "content": ...}`` or a one-message list.
- TRL conversational: ``{"prompt": [messages], "chosen": [assistant message], "rejected": [...]}``.
- TRL conversational with an implicit prompt: ``{"chosen": [full conversation], "rejected": [...]}``;
  the shared leading messages are the context.
- TRL standard (plain text): ``{"prompt": str, "chosen": str, "rejected": str}``. By default these
  are raw text as in TRL (no chat template; EOS is appended to each response at tokenisation);
  ``standard_format="chat"`` turns the prompt into a single user turn instead.

Optional fields: ``neg_type`` (the corruption that produced the rejected answer; ``"none"`` when
absent), ``group`` (pairs with the same group go to the same train/val split; defaults to
``provenance.dialogue_id``, else the context itself) and ``provenance`` (kept as is).

Problems with a pair's *content* (empty or identical answers, a context that does not end in a user
turn) raise :class:`BadPairError` with a short ``reason``; the DataModule either raises it or counts
a skip (``data.on_bad_record``). A malformed record (missing fields, wrong types) always raises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from datamodules.chat_format import Message, normalise_messages
from utils.errors import DataError
from utils.record_files import Record

DEFAULT_NEG_TYPE = "none"
BAD_REASONS = {
    "empty_chosen": "field 'chosen' is empty",
    "empty_rejected": "field 'rejected' is empty",
    "identical": "'chosen' and 'rejected' are identical, so the pair carries no preference",
    "context_not_user": "the context does not end in a user turn (the answer would not be a reply)",
    "empty_prompt": "the prompt is empty",
    "truncated_to_zero": "a response was truncated to zero tokens by data.max_length",
}


class BadPairError(DataError):
    """A well-formed record whose content can't be trained on. ``reason`` is a key of ``BAD_REASONS``."""

    def __init__(self, location: str, reason: str, detail: str = ""):
        self.reason = reason
        self.location = location
        text = BAD_REASONS.get(reason, reason) + (f" ({detail})" if detail else "")
        super().__init__(f"{location}: {text}; fix the record or set data.on_bad_record=skip")


@dataclass(frozen=True)
class PreferencePair:
    """One validated pair. Exactly one of ``context`` (chat messages ending in a user turn) and
    ``prompt_text`` (a raw-text prompt, TRL's standard format) is set."""

    context: list[Message] | None
    prompt_text: str | None
    chosen: str
    rejected: str
    neg_type: str
    group: str
    location: str


def normalise_pair(record: Record, standard_format: str = "raw") -> PreferencePair:
    """Validate one raw record and return it as a :class:`PreferencePair`."""
    data, loc = record.data, record.location
    for key in ("chosen", "rejected"):
        if key not in data:
            raise DataError(
                f"{loc}: missing field '{key}' (a preference record needs 'chosen' and 'rejected', plus "
                "'messages' or 'prompt' for the context)"
            )
    neg_type = data.get("neg_type", DEFAULT_NEG_TYPE)
    if neg_type is None:
        neg_type = DEFAULT_NEG_TYPE
    if not isinstance(neg_type, str) or not neg_type.strip():
        raise DataError(f"{loc}: field 'neg_type' must be a non-empty string, got {neg_type!r}")

    prompt_text: str | None = None
    context: list[Message] | None = None
    if "messages" in data or "conversations" in data:
        context = normalise_messages(record)
        chosen = _response(loc, "chosen", data["chosen"])
        rejected = _response(loc, "rejected", data["rejected"])
    elif "prompt" in data:
        prompt = data["prompt"]
        if isinstance(prompt, str):
            chosen = _text(loc, "chosen", data["chosen"])
            rejected = _text(loc, "rejected", data["rejected"])
            if standard_format == "chat":
                context = [{"role": "user", "content": prompt}]
            else:
                prompt_text = prompt
        elif isinstance(prompt, list):
            context = normalise_messages(Record({"messages": prompt}, record.source, record.line))
            chosen = _response(loc, "chosen", data["chosen"])
            rejected = _response(loc, "rejected", data["rejected"])
        else:
            raise DataError(
                f"{loc}: field 'prompt' must be a string or a list of messages, got {type(prompt).__name__}"
            )
    elif isinstance(data["chosen"], list) and isinstance(data["rejected"], list):
        context, chosen, rejected = _implicit_prompt(record)
    else:
        keys = ", ".join(sorted(data))
        raise DataError(
            f"{loc}: no context: expected 'messages' (or 'conversations') or TRL's 'prompt' (fields: {keys})"
        )

    if context is not None:
        if not any(m["role"] == "user" for m in context) or context[-1]["role"] != "user":
            last = context[-1]["role"] if context else "nothing"
            raise BadPairError(loc, "context_not_user", f"it ends with {last}")
    elif prompt_text is not None and not prompt_text:
        raise BadPairError(loc, "empty_prompt")
    if not chosen.strip():
        raise BadPairError(loc, "empty_chosen")
    if not rejected.strip():
        raise BadPairError(loc, "empty_rejected")
    if chosen.strip() == rejected.strip():
        raise BadPairError(loc, "identical")
    return PreferencePair(
        context=context,
        prompt_text=prompt_text,
        chosen=chosen,
        rejected=rejected,
        neg_type=neg_type,
        group=_group(data, context, prompt_text),
        location=loc,
    )


def _text(loc: str, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DataError(
            f"{loc}: field '{field}' must be a string when 'prompt' is a string, got {type(value).__name__}"
        )
    return value


def _response(loc: str, field: str, value: Any) -> str:
    """A response given as a string, an assistant message, or a list holding one assistant message."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if len(value) != 1:
            raise DataError(
                f"{loc}: field '{field}' must hold exactly one assistant message, got {len(value)} messages"
            )
        value = value[0]
    if isinstance(value, dict):
        role = value.get("role", value.get("from"))
        content = value.get("content", value.get("value"))
        if role not in ("assistant", "gpt") or not isinstance(content, str):
            raise DataError(
                f"{loc}: field '{field}' must be an assistant message with string content, got role {role!r}"
            )
        return content
    raise DataError(
        f"{loc}: field '{field}' must be a string or an assistant message, got {type(value).__name__}"
    )


def _implicit_prompt(record: Record) -> tuple[list[Message], str, str]:
    """TRL's implicit-prompt format: the shared leading messages are the context."""
    loc = record.location
    chosen = normalise_messages(Record({"messages": record.data["chosen"]}, record.source, record.line))
    rejected = normalise_messages(Record({"messages": record.data["rejected"]}, record.source, record.line))
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if len(chosen) != n + 1 or len(rejected) != n + 1:
        raise DataError(
            f"{loc}: 'chosen' and 'rejected' conversations must share every message but the last "
            f"(they share {n} of {len(chosen)} and {len(rejected)})"
        )
    for field, conv in (("chosen", chosen), ("rejected", rejected)):
        if conv[-1]["role"] != "assistant":
            raise DataError(f"{loc}: the last message of '{field}' must be an assistant message")
    return chosen[:n], chosen[-1]["content"], rejected[-1]["content"]


def _group(data: dict[str, Any], context: list[Message] | None, prompt_text: str | None) -> str:
    group = data.get("group")
    if group is None and isinstance(data.get("provenance"), dict):
        group = data["provenance"].get("dialogue_id")
    if group is None:
        group = json.dumps(context) if context is not None else prompt_text
    return str(group)
