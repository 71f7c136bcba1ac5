"""What every generation stage shares: the chat-generator protocol, the cached generator over the
shared inference layer (``inference.generation_cache``: what makes every stage resumable), and atomic
JSONL output (``utils.atomic``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from inference.generation_cache import CachedGenerator, build_generator
from utils.atomic import write_jsonl_atomic

__all__ = ["CachedGenerator", "ChatGenerator", "Message", "build_generator", "chunks", "write_jsonl_atomic"]

Message = dict[str, str]
#: A chat model as a stage sees it: chat prompts (lists of messages) in, one reply per prompt out.
ChatGenerator = Callable[[list[list[Message]]], list[str]]


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]
