"""Metrics of a reasoning evaluation, recomputed from its per-question rows (pure functions).

The rows written to ``samples.jsonl`` hold every per-question outcome (prediction, correctness and
token cost of each method and k), so the metrics of ``results.json`` are a function of the rows alone.
That is what lets an evaluation be split into shards (one per rank under ``trainer.predict``, or one
per batch of questions) and merged afterwards with :func:`merge_results`: the merged metrics are
exactly those of a single-process run over the same questions (arXiv 2311.08154's accuracy per method
and k, plus parse-failure rates and tokens per question).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

_COST_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def method_key_order(key: str) -> tuple[int, int]:
    """Sort key: ``greedy`` first, then ``sc@k`` by k, then ``sa@k`` by k."""
    if key == "greedy":
        return (0, 0)
    name, k = key.split("@")
    return (1 if name == "sc" else 2, int(k))


def calls_per_question(key: str) -> int:
    """Backend calls one question costs: greedy 1, maj@k k, agree@k k + 1 (the agreement call)."""
    if key == "greedy":
        return 1
    name, k = key.split("@")
    return int(k) + (1 if name == "sa" else 0)


def row_outcomes(row: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(method key, outcome)`` pairs of one row; an outcome holds ``pred``, ``correct`` and the costs."""
    if "greedy" in row:
        yield "greedy", row["greedy"]
    for name in ("sc", "sa"):
        for k, outcome in (row.get(name) or {}).items():
            yield f"{name}@{k}", outcome


def _tokens(outs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {
        "prompt": statistics.fmean(o["prompt_tokens"] for o in outs),
        "completion": statistics.fmean(o["completion_tokens"] for o in outs),
        "total": statistics.fmean(o["total_tokens"] for o in outs),
    }


def score_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, dict]]:
    """``(metrics, per_task)`` from per-question rows (see :func:`evaluation.reasoning.evaluator.evaluate_reasoning`).

    ``metrics[key]`` (``key`` in ``greedy``, ``sc@k``, ``sa@k``): ``accuracy``, ``correct``,
    ``num_questions``, ``parse_failure_rate``, ``parse_failures`` (a count), ``tokens_per_question``
    and ``calls_per_question``, plus ``path_parse_failure_rate`` for ``sc@k``; ``per_task[task][key]``
    (per benchmark, per decoding): ``accuracy``, ``num_questions``, ``parse_failure_rate`` and
    ``parse_failures``.
    """
    by_key: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for row in rows:
        for key, outcome in row_outcomes(row):
            by_key.setdefault(key, []).append((row["task"], outcome))
    metrics: dict[str, dict[str, Any]] = {}
    tasks = sorted({row["task"] for row in rows})
    per_task: dict[str, dict[str, Any]] = {t: {} for t in tasks}
    for key in sorted(by_key, key=method_key_order):
        pairs = by_key[key]
        outs = [o for _, o in pairs]
        n = len(outs)
        entry: dict[str, Any] = {
            "accuracy": sum(bool(o["correct"]) for o in outs) / n,
            "correct": sum(bool(o["correct"]) for o in outs),
            "num_questions": n,
            "parse_failure_rate": sum(o["pred"] is None for o in outs) / n,
            "parse_failures": sum(o["pred"] is None for o in outs),
            "tokens_per_question": _tokens(outs),
            "calls_per_question": float(calls_per_question(key)),
        }
        if key.startswith("sc@"):
            k = int(key[3:])
            entry["path_parse_failure_rate"] = sum(o["path_unparsed"] for o in outs) / (n * k)
        metrics[key] = entry
        for t in tasks:
            sub = [o for task, o in pairs if task == t]
            if sub:
                per_task[t][key] = {
                    "accuracy": sum(bool(o["correct"]) for o in sub) / len(sub),
                    "num_questions": len(sub),
                    "parse_failure_rate": sum(o["pred"] is None for o in sub) / len(sub),
                    "parse_failures": sum(o["pred"] is None for o in sub),
                }
    return metrics, per_task


def pool_settings(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The question-pool part of ``settings``: task counts, single/mixed pool and the question count."""
    counts = Counter(row["task"] for row in rows)
    tasks = {t: counts[t] for t in sorted(counts)}
    return {
        "pool": "single-task" if len(tasks) == 1 else "mixed-task",
        "tasks": tasks,
        "num_questions": len(rows),
    }


def _merge_cache(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    paths: list[str] = []
    entries: dict[str | None, int] = {}
    generated: Counter[str] = Counter()
    for p in parts:
        c = p["cache"]
        path = c.get("path")
        if path is not None and path not in paths:
            paths.append(path)
        entries[path] = max(entries.get(path, 0), int(c.get("entries", 0)))
        generated.update(c.get("generated_prompts", {}))
    return {
        "path": paths[0] if len(paths) == 1 else (paths or None),
        "entries": sum(entries.values()),
        "hits": sum(int(p["cache"].get("hits", 0)) for p in parts),
        "misses": sum(int(p["cache"].get("misses", 0)) for p in parts),
        "generated_prompts": dict(generated),
    }


def merge_results(parts: Sequence[Mapping[str, Any]], order: Sequence[str] | None = None) -> dict[str, Any]:
    """The results of the union of disjoint question shards (e.g. one per rank).

    Rows are concatenated (and put back in ``order``, a list of question ids, when given) and the
    metrics, per-task scores and pool settings are recomputed from them with :func:`score_rows`, so
    the result equals a single run over all the questions. Sample-cache statistics are summed.

    Raises:
        ValueError: no parts, a question in two parts, or ``order`` not matching the questions.
    """
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ValueError("merge_results needs at least one part")
    rows = [row for p in parts for row in p["samples"]]
    ids = [row["id"] for row in rows]
    dup = sorted(i for i, c in Counter(ids).items() if c > 1)
    if dup:
        raise ValueError(f"merge_results: questions {dup[:5]} appear in more than one part")
    if order is not None:
        if sorted(order) != sorted(ids):
            missing = sorted(set(order) - set(ids))[:5]
            extra = sorted(set(ids) - set(order))[:5]
            raise ValueError(
                f"merge_results: order does not match the rows (missing {missing}, extra {extra})"
            )
        position = {qid: i for i, qid in enumerate(order)}
        rows.sort(key=lambda r: position[r["id"]])
    metrics, per_task = score_rows(rows)
    settings = {**parts[0]["settings"], **pool_settings(rows)}
    return {
        "metrics": metrics,
        "per_task": per_task,
        "settings": settings,
        "cache": _merge_cache(parts),
        "samples": rows,
    }
