"""MT-Bench results: the mean score, tables per turn and per category, and the per-turn plot.

The reported score is the mean over judged turns (MT-Bench++ reports the mean over its 8 turns and the
per-turn curve, METHODS.md §1). A judgment whose verdict could not be parsed (score -1 or None) is a
*failure*: it is counted, and left out of every mean, never read as a score of 0.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def _is_failure(score: Any) -> bool:
    return score is None or score == -1


def _mean_table(pairs: Iterable[tuple[Any, float]]) -> dict[str, dict[str, float]]:
    sums: dict[Any, list[float]] = defaultdict(list)
    for key, score in pairs:
        sums[key].append(score)
    return {
        str(k): {"mean": sum(v) / len(v), "n": len(v)} for k, v in sorted(sums.items(), key=lambda kv: kv[0])
    }


def summarise(judgments: Sequence[Mapping[str, Any]], categories: Mapping[Any, str]) -> dict[str, Any]:
    """``results.json`` content from judgment records (``turn`` counts from 1, as FastChat's)."""
    parsed = [j for j in judgments if not _is_failure(j["score"])]
    scores = [float(j["score"]) for j in parsed]
    return {
        "score": sum(scores) / len(scores) if scores else None,
        "judged_turns": len(judgments),
        "scored_turns": len(parsed),
        "unparseable": len(judgments) - len(parsed),
        "per_turn": _mean_table((int(j["turn"]), float(j["score"])) for j in parsed),
        "per_category": _mean_table(
            (categories.get(j["question_id"], "unknown"), float(j["score"])) for j in parsed
        ),
    }


def load_results(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no MT-Bench results here (run eval.py task=mt_bench first)")
    return json.loads(path.read_text())


def plot_per_turn(
    result_folders: Sequence[str | Path], out_png: str | Path, labels: Sequence[str] | None = None
) -> Path:
    """One line per result folder: the mean score of each turn. Saves a PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, folder in enumerate(result_folders):
        results = load_results(folder)
        per_turn = results["per_turn"]
        turns = sorted(int(t) for t in per_turn)
        label = labels[i] if labels else results.get("model_id", Path(folder).name)
        ax.plot(turns, [per_turn[str(t)]["mean"] for t in turns], marker="o", label=label)
    ax.set_xlabel("turn")
    ax.set_ylabel("mean judge score (1-10)")
    ax.set_ylim(0, 10.5)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("MT-Bench score per turn")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_win_rate_per_turn(
    summary: Mapping[str, Mapping[str, Any]], out_png: str | Path, title: str = "MT-Bench pairwise"
) -> Path:
    """One line per model: its win rate (wins / matches, ties counted as matches) at each turn, from
    :func:`evaluation.mt_bench.pairwise.summarise_pairs`. Saves a PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for model, s in summary.items():
        turns = sorted(int(t) for t, v in s["per_turn"].items() if v["win_rate"] is not None)
        ax.plot(turns, [s["per_turn"][str(t)]["win_rate"] for t in turns], marker="o", label=model)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("turn")
    ax.set_ylabel("win rate (ties count as matches)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{title}: win rate per turn")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
