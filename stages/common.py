"""What every generation stage shares: the chat-generator protocol, the cached generator over the
shared inference layer (``inference.generation_cache``: what makes every stage resumable), and atomic
JSONL output."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from inference.generation_cache import CachedGenerator, build_generator

__all__ = ["CachedGenerator", "ChatGenerator", "Message", "build_generator", "chunks", "write_jsonl_atomic"]

Message = dict[str, str]
#: A chat model as a stage sees it: chat prompts (lists of messages) in, one reply per prompt out.
ChatGenerator = Callable[[list[list[Message]]], list[str]]


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSON lines through a temporary file and a rename (no half-written output).
    Returns the number of rows."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]
