"""File names made from config values: one safe path component, or one ``ConfigError`` line.

Every place that turns a name from the user's config into a file or folder name (``task.model_id``
and the model id derived from ``backend.model`` or ``model.pretrained`` in MT-Bench's
``model_answer/<id>.jsonl``, a judge's name in ``model_judgment/<judge>_single.jsonl``, ``run_name``
in the run folder and its log file) goes through :func:`file_name_part`, so no value can write a file
outside the run folder: ``..``, an absolute path or a slash never reaches ``pathlib``.

Two kinds of name:
- an **id given as a file name** (``task.model_id``, ``run_name``): a separator, ``.``/``..``, an empty
  name or a control character is refused (the user asked for that exact name);
- an **id derived** from a hub name or a folder (``org/model``, ``/models/judge``): each separator
  becomes ``_`` (FastChat's convention, e.g. ``org_model``), and what is left must still be safe.
"""

from __future__ import annotations

import re

from utils.errors import ConfigError

SEPARATORS = ("/", "\\")
MAX_BYTES = 200  # leaves room for a suffix such as "_single.jsonl" under the usual 255-byte limit
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def unsafe_reason(name: str) -> str | None:
    """Why ``name`` can't be one file-name component (``None`` when it can)."""
    if not name.strip():
        return "an empty name"
    if set(name) <= {"."}:
        return f"{name!r} names a folder, not a file"
    if any(s in name for s in SEPARATORS):
        return "a path, not a name (it holds a '/' or '\\')"
    if _CONTROL.search(name):
        return "it holds a control character"
    if len(name.encode("utf-8")) > MAX_BYTES:
        return f"longer than {MAX_BYTES} bytes"
    return None


def file_name_part(name: object, key: str, *, derived: bool = False, fix: str | None = None) -> str:
    """``name`` as one file-name component, or ``ConfigError`` naming ``key`` (and ``fix``, the way out).

    ``derived=True`` (an id taken from a hub name or folder path) maps each separator to ``_`` first;
    otherwise a separator is refused. Either way the result never leaves its folder."""
    text = "" if name is None else str(name)
    if derived:
        for sep in SEPARATORS:
            text = text.replace(sep, "_")
    reason = unsafe_reason(text)
    if reason is not None:
        fix = fix or f"set {key} to a plain file name (letters, digits, '-', '_', '.')"
        raise ConfigError([f"{key}={name!r} can't be used as a file name: {reason}; {fix}"])
    return text
