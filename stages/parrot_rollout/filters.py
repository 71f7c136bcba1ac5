"""Turn filters of the Parrot dialogue rollout (arXiv 2310.07301; METHODS.md §1 "Dialogue rollout",
step 5: filter out repeated, too-short or looping queries).

Each check returns the *reason* a turn is rejected, or ``None``; the rollout counts rejections by reason.
What a rejection does to its session (the paper gives no exact recipe, so this is our choice, and the
docs say so): a rejected turn is dropped and **ends** its session; the turns before it are kept. A
session that ends before its first complete (query, reply) turn is dropped whole.

Reasons:
- ``empty_query`` / ``too_short_query``: the Ask model wrote nothing, or fewer than ``min_query_words``;
- ``repeated_query``: the query equals, or nearly equals (rapidfuzz ``ratio`` ≥ ``near_duplicate_ratio``
  on normalised text), an earlier query of the same session;
- ``looping_session``: the answer model's reply nearly equals one of its earlier replies in the session
  (the dialogue goes round in circles);
- ``empty_reply`` / ``cut_off_reply``: the answer model wrote nothing, or stopped at the token limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, process

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n.,;:!?\"'()[]"


@dataclass(frozen=True)
class RolloutFilters:
    """Thresholds of the rollout filters (``stage.filters.*``)."""

    min_query_words: int = 3
    near_duplicate_ratio: float = 90.0  # 0-100, rapidfuzz fuzz.ratio
    loop_ratio: float = 95.0  # 0-100, reply against the session's earlier replies
    reject_cut_off_replies: bool = True

    def __post_init__(self) -> None:
        if self.min_query_words < 1:
            raise ValueError(f"stage.filters.min_query_words={self.min_query_words} must be at least 1")
        for name in ("near_duplicate_ratio", "loop_ratio"):
            value = getattr(self, name)
            if not 0 < value <= 100:
                raise ValueError(f"stage.filters.{name}={value} must be in (0, 100]")


def normalise(text: str) -> str:
    """Lower case, one space between words, no punctuation at the ends: what "the same query" means."""
    return _SPACE.sub(" ", text).strip(_EDGE_PUNCT).lower()


def _near_duplicate(text: str, earlier: Sequence[str], threshold: float) -> bool:
    if not earlier:
        return False
    norm = normalise(text)
    match = process.extractOne(
        norm, [normalise(e) for e in earlier], scorer=fuzz.ratio, score_cutoff=threshold
    )
    return match is not None


def query_problem(query: str, earlier_queries: Sequence[str], filters: RolloutFilters) -> str | None:
    """Why the Ask model's ``query`` can't be the next user turn, or ``None`` if it can."""
    if not query.strip():
        return "empty_query"
    if len(normalise(query).split()) < filters.min_query_words:
        return "too_short_query"
    if _near_duplicate(query, earlier_queries, filters.near_duplicate_ratio):
        return "repeated_query"
    return None


def reply_problem(
    reply: str, finish_reason: str | None, earlier_replies: Sequence[str], filters: RolloutFilters
) -> str | None:
    """Why the answer model's ``reply`` can't be kept, or ``None`` if it can."""
    if not reply.strip():
        return "empty_reply"
    if filters.reject_cut_off_replies and finish_reason == "length":
        return "cut_off_reply"
    if _near_duplicate(reply, earlier_replies, filters.loop_ratio):
        return "looping_session"
    return None
