"""Statistics of collected dialogues, for the rollout's ``summary.json``.

- turns per session: mean and histogram;
- context-dependent queries per session, by the CaPO negatives detector (the paper's Parrot-40K:
  3.42 of 8.71 turns per session, METHODS.md §1);
- diversity of the user queries: distinct-n (distinct n-grams / all n-grams, Li et al. 2016) and
  Self-ROUGE-L (the mean, over queries, of the best ROUGE-L F1 against the session set's other queries,
  through torchmetrics; lower means more diverse).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from stages.capo_negatives.detector import detect

Message = dict[str, str]


def user_queries(messages: Sequence[Message]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of ``texts`` (whitespace tokens, lower case); 0 when none."""
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        words = text.lower().split()
        grams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def self_rouge_l(texts: Sequence[str], max_texts: int = 200, seed: int = 0) -> float | None:
    """Mean over texts of the best ROUGE-L F1 against all the other texts (a sample of ``max_texts``
    when there are more, seeded). ``None`` with fewer than two texts."""
    from torchmetrics.functional.text import rouge_score

    pool = [t for t in texts if t.strip()]
    if len(pool) < 2:
        return None
    if len(pool) > max_texts:
        pool = random.Random(seed).sample(pool, max_texts)
    scores = []
    for i, text in enumerate(pool):
        others = pool[:i] + pool[i + 1 :]
        result = rouge_score(text, [others], rouge_keys="rougeL", accumulate="best")
        scores.append(float(result["rougeL_fmeasure"]))
    return sum(scores) / len(scores)


def rollout_statistics(sessions: Sequence[Sequence[Message]]) -> dict[str, Any]:
    """Turns (user queries) per session, context-dependent queries per session, and query diversity."""
    turns = [len(user_queries(s)) for s in sessions]
    dependent = [
        sum(detect(q, has_history=i > 0).dependent for i, q in enumerate(user_queries(s))) for s in sessions
    ]
    queries = [q for s in sessions for q in user_queries(s)]
    n = len(sessions)
    return {
        "sessions": n,
        "turns_per_session": {
            "mean": sum(turns) / n if n else 0.0,
            "histogram": {str(k): v for k, v in sorted(Counter(turns).items())},
        },
        "context_dependent_per_session": sum(dependent) / n if n else 0.0,
        "context_dependent_share": sum(dependent) / sum(turns) if sum(turns) else 0.0,
        "diversity": {
            "distinct_1": distinct_n(queries, 1),
            "distinct_2": distinct_n(queries, 2),
            "self_rouge_l": self_rouge_l(queries),
        },
    }
