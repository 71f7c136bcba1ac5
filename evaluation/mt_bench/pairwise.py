"""Pairwise MT-Bench grading as FastChat does it (``pairwise-baseline``, ``pairwise-all``).

Every match (question, turn, model_1, model_2) is judged twice: game 1 shows model_1 as A and model_2
as B, game 2 swaps them, to cancel the judge's position bias. Each game's verdict is mapped to the model
it names (``g1_winner``, ``g2_winner``: ``"model_1"``, ``"model_2"``, ``"tie"``, or ``"error"`` when
the reply had no verdict). The match outcome (:func:`match_outcome`), as FastChat counts it: a tie when
game 1 is a tie or the two games disagree; else the winner both games name. A match with an ``error``
game is left out of the counts and counted as an error.

Per model: win, tie and loss counts, the win rate ``win / (win + tie + loss)`` and FastChat's adjusted
win rate ``(win + tie / 2) / (win + tie + loss)``, overall, per turn and per category.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: game 1 shows model_1 as A; game 2 shows model_2 as A.
_G1 = {"A": "model_1", "B": "model_2", "tie": "tie"}
_G2 = {"A": "model_2", "B": "model_1", "tie": "tie"}


@dataclass(frozen=True)
class Match:
    question_id: Any
    turn: int
    model_1: str
    model_2: str


def game_winners(verdict_1: str | None, verdict_2: str | None) -> tuple[str, str]:
    """(``g1_winner``, ``g2_winner``) from the two games' verdicts (``"A"``/``"B"``/``"tie"``/None)."""
    return _G1.get(verdict_1 or "", "error"), _G2.get(verdict_2 or "", "error")


def match_outcome(g1_winner: str, g2_winner: str) -> str | None:
    """``"model_1"``, ``"model_2"`` or ``"tie"``; None when either game is an error."""
    if "error" in (g1_winner, g2_winner):
        return None
    if g1_winner == "tie" or g1_winner != g2_winner:
        return "tie"
    return g1_winner


def model_pairs(models: Sequence[str], mode: str) -> list[tuple[str, str]]:
    """``pairwise-baseline``: each model against the last one (the baseline, as model_2);
    ``pairwise-all``: every pair, in order."""
    if mode == "pairwise-baseline":
        return [(m, models[-1]) for m in models[:-1]]
    return list(itertools.combinations(models, 2))


def pair_record(
    match: Match,
    judge: tuple[str, str],
    games: Sequence[tuple[str, str]],
    winners: tuple[str, str],
) -> dict[str, Any]:
    """One line of ``model_judgment/<judge>_pair.jsonl`` with FastChat's fields; ``games`` holds
    (user_prompt, judgment) of game 1 and game 2."""
    return {
        "question_id": match.question_id,
        "model_1": match.model_1,
        "model_2": match.model_2,
        "g1_winner": winners[0],
        "g2_winner": winners[1],
        "judge": list(judge),
        "g1_user_prompt": games[0][0],
        "g1_judgment": games[0][1],
        "g2_user_prompt": games[1][0],
        "g2_judgment": games[1][1],
        "turn": match.turn,
        "tstamp": time.time(),
    }


def _rates(counts: Mapping[str, int]) -> dict[str, Any]:
    n = counts["win"] + counts["tie"] + counts["loss"]
    return {
        **{k: counts[k] for k in ("win", "tie", "loss", "error")},
        "win_rate": counts["win"] / n if n else None,
        "win_rate_adjusted": (counts["win"] + 0.5 * counts["tie"]) / n if n else None,
    }


def _tally(records: Sequence[Mapping[str, Any]], model: str, key: Any) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("win", "tie", "loss", "error"), 0))
    for r in records:
        if model not in (r["model_1"], r["model_2"]):
            continue
        side = "model_1" if r["model_1"] == model else "model_2"
        outcome = match_outcome(r["g1_winner"], r["g2_winner"])
        result = (
            "error"
            if outcome is None
            else "tie"
            if outcome == "tie"
            else "win"
            if outcome == side
            else "loss"
        )
        groups[str(key(r))][result] += 1
    return {k: _rates(v) for k, v in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))}


def _sort_key(key: str) -> tuple[int, Any]:
    return (0, int(key)) if key.isdigit() else (1, key)


def summarise_pairs(
    records: Sequence[Mapping[str, Any]], models: Sequence[str], categories: Mapping[Any, str]
) -> dict[str, dict[str, Any]]:
    """Per model: overall win/tie/loss and rates, ``per_turn`` and ``per_category``."""
    out = {}
    for m in models:
        overall = _tally(records, m, lambda r: "all").get("all") or _rates(
            dict.fromkeys(("win", "tie", "loss", "error"), 0)
        )
        out[m] = {
            **overall,
            "per_turn": _tally(records, m, lambda r: r["turn"]),
            "per_category": _tally(records, m, lambda r: categories.get(r["question_id"], "unknown")),
        }
    return out
