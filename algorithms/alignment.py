"""Imitation weights ω_j of the rewrite ŷ from a token-level Levenshtein alignment with the original y
(METHODS.md §3, step 6, "Imitation target").

Each ŷ token that the alignment does not match to an identical y token (a substitution or an
insertion) gets ``edited`` weight (1.0); every other ŷ token gets ``kept`` weight (0.5). For a correct
sample ŷ = y and every weight is ``kept``. Deletions remove y tokens and so carry no ŷ weight.

The alignment is rapidfuzz's ``Levenshtein.editops`` (unit costs, bit-parallel, in C) over the token
id sequences; rapidfuzz compares any hashable elements, so ids are compared exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

EDITED_WEIGHT = 1.0
KEPT_WEIGHT = 0.5


def edited_positions(original_ids: Sequence[int], rewrite_ids: Sequence[int]) -> list[int]:
    """Indices j of the rewrite tokens not matched to an identical original token, ascending."""
    ops = Levenshtein.editops(original_ids, rewrite_ids)
    return [dest for tag, _, dest in ops.as_list() if tag != "delete"]


def imitation_weights(
    original_ids: Sequence[int],
    rewrite_ids: Sequence[int],
    correct: bool = False,
    edited: float = EDITED_WEIGHT,
    kept: float = KEPT_WEIGHT,
) -> list[float]:
    """ω_j for every token of ``rewrite_ids`` (one float per rewrite token).

    ``correct=True``: the sample was right, ŷ = y, all weights ``kept``. Otherwise ``edited`` on the
    tokens of :func:`edited_positions` and ``kept`` elsewhere.
    """
    weights = [kept] * len(rewrite_ids)
    if correct:
        return weights
    for j in edited_positions(original_ids, rewrite_ids):
        weights[j] = edited
    return weights
