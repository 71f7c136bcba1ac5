"""Reasoning evaluation: greedy CoT, Self-Consistency (maj@k) and Self-Agreement (agree@k).

:func:`evaluate_reasoning` is plain Python (no Hydra, no Lightning): give it a backend, records and
settings; it returns a results dict and (optionally) writes ``results.json`` + ``samples.jsonl`` via
:func:`write_results`. All sampled paths come from one cached sampling run (see
:mod:`inference.sample_cache`), so maj@k and agree@k for every k share the same paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.reasoning.methods import ProgressFn, generate_cached, self_agreement, self_consistency
from evaluation.reasoning.scoring import method_key_order, pool_settings, score_rows
from inference.backends.base import Completion, GenerationBackend, group_token_cost
from inference.sample_cache import SampleCache
from inference.sampling import SamplingParams
from reasoning.answers import EXTRACTION_MODES, answers_match, extract_answer
from reasoning.prompts import PromptSettings, build_cot_prompt
from reasoning.questions import ReasoningRecord
from utils.atomic import write_jsonl_atomic, write_text_atomic

METHODS = ("greedy", "sc", "sa")
#: Paper defaults for the paths (arXiv 2311.08154 leaves them open; see METHODS.md).
DEFAULT_SAMPLING = SamplingParams(n=5, temperature=0.7, top_p=1.0, max_new_tokens=256, seed=0)


class _Progress:
    """A rich progress bar with one line per stage (no-op when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description:<14}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )

    def stage(self, name: str, total: int) -> ProgressFn | None:
        if self.bar is None:
            return None
        task = self.bar.add_task(name, total=total)
        bar = self.bar
        return lambda k: bar.advance(task, k)

    @contextmanager
    def running(self) -> Iterator[_Progress]:
        if self.bar is None:
            yield self
            return
        with self.bar:
            yield self


def _extract(text: str, rec: ReasoningRecord, mode: str) -> str | None:
    return extract_answer(text, rec.answer_type, mode, num_choices=rec.num_choices, choices=rec.choices)


def _correct(pred: str | None, rec: ReasoningRecord) -> bool:
    return answers_match(pred, rec.gold, rec.answer_type, rec.tolerance)


def _vote_keys(preds: list[str | None], rec: ReasoningRecord) -> list[str | None]:
    """Paths' answers for the vote, each written as the first earlier answer it matches (so ``0.5`` and
    ``\\frac{1}{2}`` are one vote for a ``math`` question, ``18`` and ``18.00001`` within tolerance)."""
    if rec.answer_type not in ("math", "number"):
        return preds
    seen: list[str] = []
    out: list[str | None] = []
    for p in preds:
        same = next(
            (s for s in seen if p is not None and answers_match(p, s, rec.answer_type, rec.tolerance)), None
        )
        if p is not None and same is None:
            seen.append(p)
        out.append(same if same is not None else p)
    return out


def _add_cost(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a[k] + b[k] for k in a}


def _validate(methods: Sequence[str], ks: Sequence[int], m: int, mode: str, records: Sequence) -> None:
    problems = []
    unknown = [x for x in methods if x not in METHODS]
    if unknown:
        problems.append(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if not methods:
        problems.append("no methods selected")
    if not isinstance(m, int) or m < 1:
        problems.append(f"num_paths (m) must be an integer >= 1, got {m!r}")
    elif any((not isinstance(k, int)) or k < 1 or k > m for k in ks):
        problems.append(f"every k in ks must satisfy 1 <= k <= m={m}, got {list(ks)}")
    if mode not in EXTRACTION_MODES:
        problems.append(f"extraction_mode {mode!r} is not one of {list(EXTRACTION_MODES)}")
    if not records:
        problems.append("no records to evaluate")
    if problems:
        raise ValueError("evaluate_reasoning: " + "; ".join(problems))


def evaluate_reasoning(
    backend: GenerationBackend,
    records: Sequence[ReasoningRecord],
    methods: Sequence[str] = METHODS,
    ks: Sequence[int] | None = None,
    num_paths: int | None = None,
    extraction_mode: str = "auto",
    prompt_settings: PromptSettings | None = None,
    sampling: SamplingParams = DEFAULT_SAMPLING,
    greedy_max_new_tokens: int | None = None,
    agreement_max_new_tokens: int | None = None,
    fewshot_pool: Sequence[ReasoningRecord] = (),
    cache_path: str | Path | SampleCache | None = None,
    chunk_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate greedy CoT, Self-Consistency and Self-Agreement on ``records``.

    Args:
        backend: any :class:`GenerationBackend`.
        records: the questions (see :func:`reasoning.questions.load_reasoning_records`).
        methods: a subset of ``("greedy", "sc", "sa")``.
        ks: path counts for maj@k / agree@k (each ``1 <= k <= m``); default ``[m]``.
        num_paths: m, the number of sampled paths per question; default ``max(ks)`` or
            ``sampling.n``.
        extraction_mode: ``strict``, ``flexible`` or ``auto`` (see :mod:`reasoning.answers`).
        prompt_settings: chat on/off, scenario grid, templates, stop strings.
        sampling: temperature / top_p / top_k / seed / max_new_tokens for the paths (``n`` is replaced
            by m; ``stop`` by the prompt settings' stop strings).
        greedy_max_new_tokens / agreement_max_new_tokens: budgets of the greedy calls (default: the
            sampling budget).
        fewshot_pool: solved records to draw exemplars from when ``prompt_settings.num_fewshot > 0``.
        cache_path: JSONL sample cache, reused when present (None keeps it in memory); or an open
            :class:`SampleCache`, shared across calls (e.g. one per rank under ``trainer.predict``).
        chunk_size: questions per backend call (the cache is appended after each).
        progress: show a rich progress bar.

    Answers are extracted with each record's own answer type (number / choice / yes-no / text), for
    SC's vote and for scoring alike; the "answer format unknown" scenario changes only the prompts.

    Returns:
        A dict with

        - ``metrics[key]`` for ``key`` in ``greedy``, ``sc@k``, ``sa@k``: ``accuracy``, ``correct``,
          ``num_questions``, ``parse_failure_rate`` (answer is None), ``tokens_per_question``
          (``prompt`` / ``completion`` / ``total``; a shared prompt counts once per request, SA adds
          its agreement call to the sampling cost), ``calls_per_question`` (1, k, k + 1), and for
          ``sc@k`` also ``path_parse_failure_rate``;
        - ``per_task[task][key]``: ``accuracy``, ``num_questions``, ``parse_failure_rate``;
        - ``settings``: backend description (model id, chat-template hash...), methods, ks, m,
          extraction mode, chat on/off, the scenario grid, pool kind and task counts, the full prompt
          settings, and the sampling / greedy / agreement parameters;
        - ``cache``: path, entries, hits, misses and ``generated_prompts`` per call kind;
        - ``samples``: one row per question (gold, greedy text/pred, every path's text/pred,
          ``sc[k]`` votes, ``sa[k]`` text/pred, and each outcome's correctness and token cost), written to
          ``samples.jsonl`` by :func:`write_results`. The metrics are a pure function of these rows
          (:func:`evaluation.reasoning.scoring.score_rows`), so shards merge exactly (``merge_results``).
    """
    methods = list(dict.fromkeys(methods))
    settings = prompt_settings or PromptSettings()
    ks = sorted(set(ks if ks is not None else [num_paths or sampling.n]))
    m = num_paths if num_paths is not None else max(ks, default=sampling.n)
    _validate(methods, ks, m, extraction_mode, records)
    plan = _plan(methods, ks, m, sampling, settings, greedy_max_new_tokens, agreement_max_new_tokens)
    cache = cache_path if isinstance(cache_path, SampleCache) else SampleCache(cache_path)
    hits_before, misses_before = cache.hits, cache.misses
    prompts = [build_cot_prompt(r, settings, fewshot_pool) for r in records]
    runs = _generate(backend, cache, records, prompts, plan, settings, chunk_size, _Progress(progress))
    path_preds = [[_extract(c.text, r, extraction_mode) for c in g] for r, g in zip(records, runs.paths)]
    rows = [
        _question_row(qi, rec, runs, path_preds[qi] if runs.paths else [], plan, extraction_mode)
        for qi, rec in enumerate(records)
    ]
    metrics, per_task = score_rows(rows)
    return {
        "metrics": metrics,
        "per_task": per_task,
        "settings": _result_settings(backend, plan, extraction_mode, settings, rows),
        "cache": {
            "path": str(cache.path) if cache.path is not None else None,
            "entries": len(cache),
            "hits": cache.hits - hits_before,
            "misses": cache.misses - misses_before,
            "generated_prompts": runs.generated,
        },
        "samples": rows,
    }


@dataclass(frozen=True)
class _Plan:
    """The resolved settings of one evaluation: methods, ks, m and the three call kinds' parameters."""

    methods: list[str]
    ks: list[int]
    m: int
    path_params: SamplingParams
    greedy_params: SamplingParams
    agree_params: SamplingParams


def _plan(
    methods: list[str],
    ks: list[int],
    m: int,
    sampling: SamplingParams,
    settings: PromptSettings,
    greedy_max_new_tokens: int | None,
    agreement_max_new_tokens: int | None,
) -> _Plan:
    stop = tuple(settings.stop_strings())
    greedy = SamplingParams(
        n=1, temperature=0.0, max_new_tokens=greedy_max_new_tokens or sampling.max_new_tokens, stop=stop
    )
    return _Plan(
        methods=methods,
        ks=ks,
        m=m,
        path_params=sampling.replace(n=m, stop=stop),
        greedy_params=greedy,
        agree_params=greedy.replace(max_new_tokens=agreement_max_new_tokens or sampling.max_new_tokens),
    )


@dataclass
class _Runs:
    """Every completion of one evaluation, per call kind, and how many prompts each kind generated."""

    greedy: list[list[Completion]] = field(default_factory=list)
    paths: list[list[Completion]] = field(default_factory=list)
    agreements: dict[int, list[list[Completion]]] = field(default_factory=dict)
    generated: dict[str, int] = field(default_factory=lambda: {"greedy": 0, "paths": 0, "agreement": 0})


def _generate(
    backend: GenerationBackend,
    cache: SampleCache,
    records: Sequence[ReasoningRecord],
    prompts: Sequence[Any],
    plan: _Plan,
    settings: PromptSettings,
    chunk_size: int,
    bar: _Progress,
) -> _Runs:
    """Greedy CoT, the m sampled paths and the Self-Agreement calls, all through the sample cache."""
    runs = _Runs()
    items = [(r.id, p) for r, p in zip(records, prompts)]

    def counted(kind: str, call: Any) -> list[list[Completion]]:
        misses = cache.misses
        out = call()
        runs.generated[kind] += cache.misses - misses  # prompts sent to the backend, per kind
        return out

    with bar.running():
        if "greedy" in plan.methods:
            progress = bar.stage("greedy CoT", len(items))
            runs.greedy = counted(
                "greedy",
                lambda: generate_cached(
                    backend, cache, "greedy", items, plan.greedy_params, chunk_size, progress
                ),
            )
        if "sc" in plan.methods or "sa" in plan.methods:
            progress = bar.stage(f"sample m={plan.m}", len(items))
            runs.paths = counted(
                "paths",
                lambda: generate_cached(
                    backend, cache, "paths", items, plan.path_params, chunk_size, progress
                ),
            )
        if "sa" in plan.methods:
            texts = [[c.text for c in g] for g in runs.paths]
            for k in plan.ks:
                progress = bar.stage(f"agreement k={k}", len(items))
                runs.agreements[k] = counted(
                    "agreement",
                    lambda k=k, progress=progress: self_agreement(
                        backend, cache, records, texts, k, settings, plan.agree_params, chunk_size, progress
                    ),
                )
    return runs


def _question_row(
    qi: int, rec: ReasoningRecord, runs: _Runs, path_preds: list[str | None], plan: _Plan, mode: str
) -> dict[str, Any]:
    """One ``samples.jsonl`` row: the question, each method's prediction, correctness and token cost."""
    row: dict[str, Any] = {
        "id": rec.id,
        "task": rec.task,
        "answer_type": rec.answer_type,
        "question": rec.question,
        "choices": list(rec.choices),
        "gold": rec.gold,
    }
    if runs.greedy:
        c = runs.greedy[qi][0]
        pred = _extract(c.text, rec, mode)
        cost = group_token_cost(runs.greedy[qi])
        row["greedy"] = {"text": c.text, "pred": pred, "correct": _correct(pred, rec), **cost}
    if not runs.paths:
        return row
    paths = runs.paths[qi]
    row["paths"] = [
        {
            "text": c.text,
            "pred": p,
            "completion_tokens": c.completion_tokens,
            "finish_reason": c.finish_reason,
        }
        for c, p in zip(paths[: plan.m], path_preds)
    ]
    for k in plan.ks:
        path_cost = group_token_cost(paths[:k])
        if "sc" in plan.methods:
            vote = self_consistency(_vote_keys(path_preds, rec), k)
            row.setdefault("sc", {})[str(k)] = {
                "pred": vote.answer,
                "correct": _correct(vote.answer, rec),
                "votes": vote.votes,
                "path_unparsed": sum(p is None for p in path_preds[:k]),
                **path_cost,
            }
        if "sa" in plan.methods:
            group = runs.agreements[k][qi]
            pred = _extract(group[0].text, rec, mode)
            cost = _add_cost(path_cost, group_token_cost(group))
            row.setdefault("sa", {})[str(k)] = {
                "text": group[0].text,
                "pred": pred,
                "correct": _correct(pred, rec),
                **cost,
            }
    return row


def _result_settings(
    backend: GenerationBackend,
    plan: _Plan,
    extraction_mode: str,
    settings: PromptSettings,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "backend": backend.describe(),
        "methods": plan.methods,
        "ks": list(plan.ks),
        "num_paths": plan.m,
        "extraction_mode": extraction_mode,
        "chat_template": settings.chat,
        "question_type_known": settings.question_type_known,
        "answer_format_known": settings.answer_format_known,
        **pool_settings(rows),
        "prompt": settings.to_dict(),
        "sampling": plan.path_params.to_dict(),
        "greedy": plan.greedy_params.to_dict(),
        "agreement": plan.agree_params.to_dict(),
    }


def flat_metrics(results: dict[str, Any], prefix: str = "reasoning/") -> dict[str, float]:
    """``{"reasoning/sc@5/accuracy": ..., ...}`` for loggers and Hydra's ``optimized_metric``."""
    out: dict[str, float] = {}
    for key, m in results["metrics"].items():
        out[f"{prefix}{key}/accuracy"] = float(m["accuracy"])
        out[f"{prefix}{key}/parse_failure_rate"] = float(m["parse_failure_rate"])
        out[f"{prefix}{key}/tokens_per_question"] = float(m["tokens_per_question"]["total"])
    return out


def write_results(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.json`` (everything but the rows) and ``samples.jsonl`` (one row per question).

    Both are written to temporary files and renamed, so no half-written file is left behind.
    """
    out = Path(out_dir)
    res_path, rows_path = out / "results.json", out / "samples.jsonl"
    summary = {k: v for k, v in results.items() if k != "samples"}
    write_jsonl_atomic(rows_path, results["samples"])
    write_text_atomic(res_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return res_path, rows_path


def results_table(results: dict[str, Any]) -> Any:
    """A ``rich.table.Table`` with one row per method (and per-task accuracy columns for mixed pools)."""
    from rich.table import Table

    s = results["settings"]
    title = (
        f"{s['backend'].get('model_id', '?')} | {s['num_questions']} questions ({s['pool']}) | "
        f"chat={s['chat_template']} extraction={s['extraction_mode']} "
        f"qtype_known={s['question_type_known']} format_known={s['answer_format_known']}"
    )
    table = Table(title=title)
    for col in ("method", "accuracy", "parse fail", "tokens/q", "calls/q"):
        table.add_column(col, justify="left" if col == "method" else "right")
    tasks = list(results["per_task"]) if len(results["per_task"]) > 1 else []
    for t in tasks:
        table.add_column(t, justify="right")
    for key in sorted(results["metrics"], key=method_key_order):
        m = results["metrics"][key]
        cells = [
            key,
            f"{100 * m['accuracy']:.1f}%",
            f"{100 * m['parse_failure_rate']:.1f}%",
            f"{m['tokens_per_question']['total']:.0f}",
            f"{m['calls_per_question']:.0f}",
        ]
        for t in tasks:
            pt = results["per_task"][t].get(key)
            cells.append(f"{100 * pt['accuracy']:.1f}%" if pt else "-")
        table.add_row(*cells)
    return table


def print_results_table(results: dict[str, Any], console: Any = None) -> None:
    """Print :func:`results_table` to ``console`` (a new rich Console by default)."""
    if console is None:
        from rich.console import Console

        console = Console()
    console.print(results_table(results))
