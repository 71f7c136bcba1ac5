"""The table at the end of scripts/parrot_pipeline.sh: per-turn MT-Bench++ scores of the chat model and
the CaPO model, and CaPO's win/tie/loss and win rate over the chat model per turn (pairwise, both orders).

Usage: python scripts/parrot_summary.py OUT_DIR   (prints a table, then one JSON line)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summary(out: Path) -> dict[str, Any]:
    """Per turn: ``chat`` and ``capo`` mean scores, and CaPO's pairwise counts and win rate."""
    chat = _load(out / "mt_bench_chat" / "results.json") or {}
    capo = _load(out / "mt_bench_capo" / "results.json") or {}
    pair = (_load(out / "mt_bench_pair" / "results.json") or {}).get("pairwise", {}).get("chat_capo", {})
    turns = sorted({int(t) for r in (chat, capo, pair) for t in r.get("per_turn", {})})
    rows = []
    for t in turns:
        p = pair.get("per_turn", {}).get(str(t), {})
        rows.append(
            {
                "turn": t,
                "chat": chat.get("per_turn", {}).get(str(t), {}).get("mean"),
                "capo": capo.get("per_turn", {}).get(str(t), {}).get("mean"),
                **{k: p.get(k) for k in ("win", "tie", "loss", "error", "win_rate", "win_rate_adjusted")},
            }
        )
    overall = {k: pair.get(k) for k in ("win", "tie", "loss", "error", "win_rate", "win_rate_adjusted")}
    return {
        "chat_score": chat.get("score"),
        "capo_score": capo.get("score"),
        "per_turn": rows,
        "capo_vs_chat": overall,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: parrot_summary.py OUT_DIR", file=sys.stderr)
        return 2
    s = summary(Path(argv[1]))
    cols = ["turn", "chat", "capo", "win", "tie", "loss", "error", "win_rate", "win_rate_adjusted"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in s["per_turn"]:
        print("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    o = s["capo_vs_chat"]
    print(
        f"| all | {_fmt(s['chat_score'])} | {_fmt(s['capo_score'])} | "
        + " | ".join(_fmt(o[c]) for c in cols[3:])
        + " |"
    )
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
