"""A JSONL cache of generations, so that one set of sampled paths serves every method and k.

Each line is one request's result::

    {"key": "<sha256 prefix>", "kind": "paths" | "greedy" | "agreement",
     "qid": "<question id>", "model": "<backend model_id>",
     "params": {<SamplingParams.cache_fields()>}, "prompt_sha": "<sha256 of the prompt>",
     "n": <number of completions>, "completions": [<Completion.to_dict()>, ...]}

``key`` hashes kind, question id, model, the sampling settings (without ``n``) and the full prompt, so a
changed prompt template, model or temperature never reuses stale samples. An entry holding at least
the requested number of completions serves the request with its first ``n``; a later line with the
same key replaces an earlier one. Lines are appended and flushed per batch: an interrupted run keeps
what it finished, and a half-written last line is skipped (with a warning) on the next load and cut
off the file before the next append.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.backends.base import Completion, Prompt
from inference.sampling import SamplingParams

log = logging.getLogger(__name__)


class SampleCacheError(ValueError):
    """The cache file is corrupt somewhere other than a truncated last line."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def prompt_sha(prompt: Prompt) -> str:
    """sha256 of a prompt (a string, chat messages, or anything with ``to_dict()`` such as
    :class:`inference.chat.NextTurn`)."""
    if isinstance(prompt, str):
        payload: Any = prompt
    elif hasattr(prompt, "to_dict"):
        payload = prompt.to_dict()
    else:
        payload = [dict(m) for m in prompt]
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def cache_key(kind: str, qid: str, model_id: str, params: SamplingParams, prompt: Prompt) -> str:
    """The lookup key of one request."""
    payload = {
        "kind": kind,
        "qid": qid,
        "model": model_id,
        "params": params.cache_fields(),
        "prompt": prompt_sha(prompt),
    }
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()[:32]


class SampleCache:
    """Append-only JSONL cache (or in-memory only when ``path`` is None).

    Args:
        path: the file this cache appends to (created on the first write).
        read_also: more cache files whose entries are served but never written, e.g. the other ranks'
            files of a multi-process evaluation, so a rerun with another device count reuses every
            sample. They are read once, here; a line that does not parse in them is skipped with a
            warning (another process may be writing it).
    """

    def __init__(self, path: str | Path | None, read_also: Sequence[str | Path] = ()) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, dict[str, Any]] = {}
        self._truncate_to: int | None = None  # byte offset of a half-written last line to drop
        self.hits = 0
        self.misses = 0
        for other in read_also:
            if Path(other).is_file() and (self.path is None or Path(other).resolve() != self.path.resolve()):
                self._load_foreign(Path(other))
        if self.path is not None and self.path.exists():
            self._load()

    def _load_foreign(self, path: Path) -> None:
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entry["completions"] = [Completion.from_dict(c) for c in entry["completions"]]
                self._entries[entry["key"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                log.warning("%s:%d: skipping an unreadable cache line (%s)", path, i, e)

    def _load(self) -> None:
        assert self.path is not None
        raw = self.path.read_bytes()
        unterminated = bool(raw) and not raw.endswith(b"\n")
        lines = raw.split(b"\n")
        last_content = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
        offset = 0
        for i, raw_line in enumerate(lines):
            start, offset = offset, offset + len(raw_line) + 1
            line = raw_line.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key = entry["key"]
                entry["completions"] = [Completion.from_dict(c) for c in entry["completions"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                if i == last_content and unterminated:
                    log.warning("%s:%d: skipping a half-written last line (%s)", self.path, i + 1, e)
                    self._truncate_to = start
                    continue
                raise SampleCacheError(
                    f"{self.path}:{i + 1}: corrupt cache line ({type(e).__name__}: {e}); delete the file "
                    "or that line to resample"
                ) from None
            self._entries[key] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, n: int) -> list[Completion] | None:
        """The first ``n`` cached completions for ``key``, or None if absent or too few."""
        entry = self._entries.get(key)
        if entry is None or len(entry["completions"]) < n:
            self.misses += 1
            return None
        self.hits += 1
        return list(entry["completions"][:n])

    def put_many(self, items: Sequence[dict[str, Any]]) -> None:
        """Store entries (each with ``key``, ``kind``, ``qid``, ``model``, ``params``, ``prompt``,
        ``completions``) and append them to the file in one flushed write."""
        lines = []
        for it in items:
            entry = {
                "key": it["key"],
                "kind": it["kind"],
                "qid": it["qid"],
                "model": it["model"],
                "params": it["params"],
                "prompt_sha": prompt_sha(it["prompt"]),
                "n": len(it["completions"]),
                "completions": list(it["completions"]),
            }
            self._entries[entry["key"]] = entry
            lines.append(_canonical({**entry, "completions": [c.to_dict() for c in entry["completions"]]}))
        if self.path is None or not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._truncate_to is not None and self.path.exists():
            os.truncate(self.path, self._truncate_to)
        self._truncate_to = None
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    lines.insert(0, "")  # a complete but unterminated last line: start on a new line
        with self.path.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
