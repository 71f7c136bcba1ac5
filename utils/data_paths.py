"""Glob patterns in data paths (``data.path=shards/part-*.jsonl``): the files they match, sorted."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from utils.errors import DataError

GLOB_CHARS = ("*", "?", "[")


def path_exists(path: str | Path) -> bool:
    """``Path(path).exists()`` for any config string: a value too long to be a file name (a chat
    template, a JSON blob) or holding a NUL byte is simply no existing path, not an ``OSError``."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def expand_pattern(path: str | Path, key: str = "data.path") -> list[Path] | None:
    """The files a glob pattern (``data/part-*.jsonl``, ``shards/**/*.jsonl``) matches, sorted by name;
    ``None`` when ``path`` is no pattern or names an existing path. A pattern that matches no file is
    one ``DataError`` naming ``key``."""
    text = str(path)
    if not any(c in text for c in GLOB_CHARS) or path_exists(text):
        return None
    matches = sorted(
        Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True) if os.path.isfile(m)
    )
    if not matches:
        raise DataError(f"{key}={text}: no file matches this pattern")
    return matches
