"""Read user text files as UTF-8; a byte that is not UTF-8 is one ``DataError`` naming file:line:column.

A UTF-8 byte-order mark at the start of a file (what Windows editors often write) is skipped, as
Python's ``utf-8-sig`` codec does.

Every reader of user data (JSONL/JSON records, FastChat questions and judge prompts, text corpora)
goes through these two functions, so a file saved as Latin-1 or cp1252 is reported the same way
everywhere instead of as a ``UnicodeDecodeError`` traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from utils.errors import DataError

BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark


def _not_utf8(path: Path, line_no: int, line: bytes, error: UnicodeDecodeError) -> DataError:
    column = len(line[: error.start].decode("utf-8", errors="replace")) + 1
    return DataError(
        f"{path}:{line_no}: not valid UTF-8 (byte 0x{line[error.start]:02x} at column {column}); "
        "save the file as UTF-8"
    )


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for every line of ``path`` (1-based, line ends kept), decoded as UTF-8."""
    p = Path(path)
    with p.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(p, line_no, raw, e) from None


def iter_json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSONL file; a line that is not JSON, or
    not a JSON object, is one ``DataError`` naming file:line."""
    p = Path(path)
    for line_no, line in iter_lines(p):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{line_no}: malformed JSON line ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{p}:{line_no}: expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj


def read_text(path: str | Path) -> str:
    """The whole of ``path`` decoded as UTF-8."""
    p = Path(path)
    data = p.read_bytes()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        start = data.rfind(b"\n", 0, e.start) + 1
        end = data.find(b"\n", e.start)
        line = data[start : end if end >= 0 else len(data)]
        shifted = UnicodeDecodeError(e.encoding, line, e.start - start, e.end - start, e.reason)
        raise _not_utf8(p, data.count(b"\n", 0, e.start) + 1, line, shifted) from None
