"""Normalise chat records (OpenAI ``messages`` or ShareGPT ``conversations``) to ``[{role, content}]``."""

from __future__ import annotations

from typing import Any

from utils.errors import DataError
from utils.record_files import Record

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}

Message = dict[str, str]


def normalise_messages(record: Record) -> list[Message]:
    """Return the record's conversation as OpenAI-style messages, validated.

    Accepts ``{"messages": [{"role", "content"}]}`` or ``{"conversations": [{"from", "value"}]}``.
    Raises ``DataError`` naming the record for an unknown format, an unknown role, a missing or
    non-string content, or an empty conversation.
    """
    data = record.data
    if "messages" in data:
        raw, role_key, content_key, role_map = data["messages"], "role", "content", None
    elif "conversations" in data:
        raw, role_key, content_key, role_map = data["conversations"], "from", "value", SHAREGPT_ROLES
    else:
        keys = ", ".join(sorted(data)) or "none"
        raise DataError(
            f"{record.location}: no 'messages' (OpenAI) or 'conversations' (ShareGPT) field (fields: {keys})"
        )
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{record.location}: empty conversation")
    out: list[Message] = []
    for j, turn in enumerate(raw):
        out.append(_turn(record, j, turn, role_key, content_key, role_map))
    if all(m["role"] == "system" for m in out):
        raise DataError(f"{record.location}: empty conversation (only a system message)")
    return out


def _turn(
    record: Record, j: int, turn: Any, role_key: str, content_key: str, role_map: dict[str, str] | None
) -> Message:
    if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
        raise DataError(f"{record.location}: turn {j} needs '{role_key}' and '{content_key}' fields")
    role = turn[role_key]
    if role_map is not None:
        role = role_map.get(str(role).lower(), role)
    if role not in ROLES:
        allowed = ", ".join(sorted(role_map) if role_map else ROLES)
        raise DataError(
            f"{record.location}: turn {j} has unknown role {turn[role_key]!r} (expected one of: {allowed})"
        )
    content = turn[content_key]
    if not isinstance(content, str):
        raise DataError(f"{record.location}: turn {j} content must be a string, got {type(content).__name__}")
    return {"role": role, "content": content}
