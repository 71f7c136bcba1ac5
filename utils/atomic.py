"""Atomic file writes: write a temporary file next to the target, then rename it over the target.

A crash (or Ctrl-C) mid-write never leaves a half-written file: readers see the old file or the new one.
Every writer in Quartet goes through :func:`atomic_path`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from utils.temp_files import temp_path_beside


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (created if needed); rename it onto ``path`` when the
    block succeeds, delete it when the block raises."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(target)  # a name the next start recognises as a leftover (utils.temp_files)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``, so that the result is strict
    JSON (``null``) rather than Python's bare ``NaN``, which JSON readers reject."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON (sorted keys; unknown types as ``str``; non-finite numbers
    as ``null``) atomically."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSON lines atomically; return the number of rows."""
    n = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


# ---- folders (sharded checkpoints) ------------------------------------------------------------------
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the C
    library or the file system lacks it."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def replace_folder(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move the finished folder ``src`` onto ``dst`` (a folder, a file, or nothing), then delete what
    ``dst`` held.

    On Linux the two are swapped in one atomic step, so ``dst`` is always either complete old or
    complete new: a kill at any point leaves a loadable ``dst`` (and at worst the old content under
    ``src``'s temporary name, which the next start removes). Elsewhere ``dst`` is first renamed aside,
    leaving a window of two renames in which it is missing.
    """
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.rename(src, dst)
    elif dst.is_dir() and _exchange(src, dst):
        shutil.rmtree(src)
    else:
        tmp = temp_path_beside(dst)
        aside = tmp.with_name(tmp.name + "-old")
        os.rename(dst, aside)
        os.rename(src, dst)
        shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
