"""Stop-string helpers shared by the backends."""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest occurrence of any stop string in ``text``, or ``-1``."""
    best = -1
    for s in stops:
        i = text.find(s)
        if i != -1 and (best == -1 or i < best):
            best = i
    return best


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` just before the first stop string.

    Returns ``(text, hit)`` where ``hit`` says whether a stop string was found.
    """
    i = find_stop(text, stops)
    if i == -1:
        return text, False
    return text[:i], True
