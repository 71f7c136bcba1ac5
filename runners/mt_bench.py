"""The ``mt_bench`` task of eval.py (``task.runner: runners.mt_bench.run``).

1. Read FastChat's ``question.jsonl`` (``data.path``) and, optionally, reference answers
   (``task.reference_answers``); with ``task.extend_to=N``, extend every session to N turns with the
   Ask model (``task.ask_model``), once, from a named source (``evaluation/mt_bench/extension.py``).
2. Check that the judge prompts can grade every turn the run needs (one error otherwise).
3. Answer turn by turn with the model under test (``model`` + ``backend``), or read answers made
   elsewhere (``task.answers``, a FastChat ``model_answer`` file). Answers are written to
   ``model_answer/<model_id>.jsonl`` in FastChat's format.
4. Grade every turn on its own answer (``evaluation/mt_bench/grading.py``): ``task.mode=single`` with
   the 1-10 rating judge, or ``pairwise-baseline`` / ``pairwise-all`` with the ``[[A]]/[[B]]/[[C]]``
   judge in both orders (``judge`` group: ``hf``, ``vllm``, ``openai_http``, or the tiny demo's
   ``standin``), prompts from ``evaluation/mt_bench/judge_prompts.py`` or ``task.judge_prompts``.
5. Write ``results.json``, ``model_judgment/<judge.name>_single.jsonl`` (and ``judgments.jsonl``) or
   ``_pair.jsonl``, and ``score_per_turn.png`` or ``win_rate_per_turn.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from evaluation.judges import Judge, PairJudge, RatingJudge
from evaluation.mt_bench.answering import answer_all
from evaluation.mt_bench.extension import Source, check_source, extend_questions
from evaluation.mt_bench.fastchat_format import (
    Question,
    answer_record,
    read_answers,
    read_questions,
    write_questions,
)
from evaluation.mt_bench.grading import grade_pairs, grade_single, needed_after_extension, needed_prompts
from evaluation.mt_bench.judge_prompts import check_prompts, load_judge_prompts
from evaluation.mt_bench.pairwise import model_pairs, summarise_pairs
from evaluation.mt_bench.report import plot_per_turn, plot_win_rate_per_turn, summarise
from inference.generation_cache import CachedGenerator, build_generator, open_cache, sampling_params
from inference.sampling import SamplingParams
from utils.atomic import write_json_atomic, write_jsonl_atomic
from utils.errors import ConfigError, DataError
from utils.safe_names import file_name_part

log = logging.getLogger("quartet.eval")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def model_under_test(cfg: DictConfig) -> Any:
    """The generation backend of the model under test (``backend`` group; ``hf`` builds ``model``)."""
    from inference.backends.factory import build_backend

    options = {k: v for k, v in _plain(cfg.backend).items() if k != "name"}
    name = cfg.backend.name
    if name == "hf":
        from inference.backends.hf import HFBackend
        from models import build_model, load_tokenizer

        m = _plain(cfg.model)
        tok = load_tokenizer(m["tokenizer"], bool(m.get("trust_remote_code", False)), m.get("chat_template"))
        model = build_model(m, tok).eval()
        model_id = f"{m.get('pretrained') or m.get('kind', 'model')}"
        batch_size, decode = int(options.get("batch_size", 8)), str(options.get("decode", "eager"))
        return HFBackend(model, tok, batch_size=batch_size, model_id=model_id, decode=decode)
    if name == "vllm":  # model.chat_template applies to vLLM's rendering too
        template = (_plain(cfg.model) or {}).get("chat_template") if cfg.get("model") else None
        options = {"path": options["path"], "chat_template": template, **(options.get("engine") or {})}
    return build_backend(name, **options)


def default_model_id(cfg: DictConfig) -> str:
    if cfg.task.get("model_id"):
        return str(cfg.task.model_id)
    if cfg.backend.name == "openai_http":
        return str(cfg.backend.model)
    pretrained = cfg.get("model", {}).get("pretrained") if cfg.get("model") else None
    if pretrained:
        p = Path(str(pretrained))
        return p.parent.name if p.name == "hf_model" else p.name
    return str(cfg.get("model", {}).get("kind", "model"))


def _label(node: Any) -> str:
    """A model config's name for the records: ``model``, else ``path``, else its backend."""
    d = _plain(node) or {}
    return str(d.get("model") or d.get("path") or d.get("backend", "model"))


def _extension_source(t: DictConfig, questions: list[Question]) -> Source:
    if t.get("extend_from"):
        return Source(f"model answers {t.extend_from}", read_answers(t.extend_from))
    return Source("reference answers", {q.question_id: q.reference or [] for q in questions})


def load_questions(cfg: DictConfig, cache: Any, before_extension: Any = None) -> list[Question]:
    """The questions, with references; with ``task.extend_to``, extended once (``task.extended_questions``
    is reused when it exists, so every model answers the same questions). ``before_extension`` (a
    check) sees the questions before any model is called."""
    t = cfg.task
    questions = read_questions(cfg.data.path)
    if t.get("reference_answers"):
        refs = read_answers(t.reference_answers)
        for q in questions:
            q.reference = refs.get(q.question_id, q.reference)
    if t.get("limit"):
        questions = questions[: int(t.limit)]
    if not t.get("extend_to"):
        return questions
    extended = Path(t.extended_questions)
    if extended.is_file():
        log.info(
            "mt_bench: reusing the extended questions in %s (written once: every model answers the same)",
            extended,
        )
        return read_questions(extended)
    if not t.get("ask_model"):
        raise ConfigError(["task.extend_to needs task.ask_model (e.g. task.ask_model.path=<Ask model dir>)"])
    if before_extension is not None:
        before_extension(questions)
    source = _extension_source(t, questions)
    check_source(questions, int(t.extend_to), source, bool(t.get("reference_model")))
    ask = build_generator(_plain(t.ask_model), "task.ask_model", cache, kind="mt_bench/ask")
    ref = None
    if t.get("reference_model"):
        ref = build_generator(
            _plain(t.reference_model), "task.reference_model", cache, kind="mt_bench/reference"
        )
    names = {"ask_model": _label(t.ask_model), "reference_model": _label(t.reference_model)}
    questions = extend_questions(questions, int(t.extend_to), ask, source, ref, names)
    write_questions(extended, questions)
    log.info("mt_bench: wrote the extended questions to %s (conditioned on %s)", extended, source.name)
    return questions


MODES = ("single", "pairwise-baseline", "pairwise-all")


def answer_file_name(cfg: DictConfig, model_id: str) -> str:
    """``model_answer/<this>``: ``task.model_id`` as given (a path is refused), or the default id with
    each ``/`` as ``_`` (``org/model`` -> ``org_model.jsonl``); never a path out of the run folder."""
    if cfg.task.get("model_id") is not None:
        return file_name_part(cfg.task.model_id, "task.model_id") + ".jsonl"
    key = "backend.model" if cfg.backend.name == "openai_http" else "the model id"
    stem = file_name_part(model_id, key, derived=True, fix="set task.model_id=<a plain file name>")
    return stem + ".jsonl"


def judge_file_stem(cfg: DictConfig, name: str) -> str:
    """``model_judgment/<this>_single.jsonl`` (or ``_pair``): the judge's name as one safe component."""
    j = cfg.judge
    key = "judge.name" if j.get("name") else "judge.model" if j.get("model") else "judge.path"
    return file_name_part(name, key, derived=True, fix="give judge.name=<judge model name>")


def _config_problems(cfg: DictConfig, model_id: str) -> list[str]:
    """File names made from the config and the judge's and Ask model's sampling settings."""
    problems: list[str] = []
    checks = [lambda: answer_file_name(cfg, model_id)]
    if cfg.get("judge") is not None:
        checks.append(lambda: judge_file_stem(cfg, judge_name(cfg)))
        ask = cfg.task.get("ask_model") if cfg.task.get("extend_to") else None
        for what, node in (("judge", cfg.judge), ("task.ask_model", ask)):
            if node is not None and node.get("backend") != "standin":
                checks.append(lambda node=node, what=what: sampling_params(_plain(node), what))
    for check in checks:
        try:
            check()
        except ConfigError as e:
            problems += e.problems
    return problems


def check_task(cfg: DictConfig) -> None:
    """Every config problem of the task at once, before anything is loaded, written or generated."""
    t, problems = cfg.task, _config_problems(cfg, default_model_id(cfg))
    if cfg.get("judge") is None:
        problems.append(
            "task=mt_bench needs a judge: judge=hf|vllm|openai_http (or judge=standin for the tiny demo)"
        )
    mode = t.get("mode", "single")
    if mode not in MODES:
        problems.append(f"task.mode={mode!r}: choose one of {', '.join(MODES)}")
    if mode == "pairwise-baseline" and not t.get("baseline"):
        problems.append("task.mode=pairwise-baseline needs task.baseline=<the baseline's model_answer file>")
    if mode == "pairwise-all" and not t.get("compare_answers"):
        problems.append("task.mode=pairwise-all needs task.compare_answers=[<model_answer file>, ...]")
    if problems:
        raise ConfigError(problems)


def judge_name(cfg: DictConfig) -> str:
    """``judge.name``; else the judge model's id (``judge.model``) or folder name; the stand-in's name."""
    j = cfg.judge
    if j.get("name"):
        return str(j.name)
    if j.get("backend") == "standin":
        from evaluation.mt_bench.standin_judge import NAME

        return NAME
    if j.get("model"):
        return str(j.model)
    p = Path(str(j.get("path") or "judge"))
    return p.parent.name if p.name == "hf_model" else p.name


def build_judge(cfg: DictConfig, cache: Any, pairwise: bool) -> Judge:
    """The rating judge (single) or the ``[[A]]/[[B]]/[[C]]`` judge (pairwise) on ``cfg.judge``."""
    kind = PairJudge if pairwise else RatingJudge
    j = {k: v for k, v in _plain(cfg.judge).items() if k != "name"}
    if j.get("backend") == "standin":
        from evaluation.mt_bench.standin_judge import standin_judge

        return kind(standin_judge)
    chunk = int(j.pop("chunk_size", 32) or 32)
    return kind(build_generator(j, "judge", cache, kind=f"mt_bench/judge_{kind.kind}", chunk_size=chunk))


def _answers_of(path: str, questions: list[Question]) -> dict[Any, list[str]]:
    answers = read_answers(path)
    missing = [q.question_id for q in questions if len(answers.get(q.question_id, [])) < len(q.turns)]
    if missing:
        raise DataError(f"{path}: no answer for every turn of questions {missing[:10]}")
    return answers


def _pairwise(
    cfg: DictConfig, questions: list[Question], answers: dict[Any, list[str]], model_id: str, grade: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The pair records and the per-model summary of ``pairwise-baseline`` / ``pairwise-all``."""
    t = cfg.task
    files = [t.baseline] if t.mode == "pairwise-baseline" else list(t.compare_answers)
    by_model: dict[str, dict[Any, list[str]]] = {model_id: answers}
    for f in files:
        name = Path(str(f)).stem
        if name in by_model:
            raise ConfigError([f"{f}: model id {name!r} appears twice in the pairwise comparison"])
        by_model[name] = _answers_of(str(f), questions)
    models = list(by_model)
    records = grade(by_model, model_pairs(models, t.mode))
    return records, summarise_pairs(records, models, {q.question_id: q.category for q in questions})


def _single_results(
    judgments: list[dict[str, Any]], questions: list[Question], model_id: str
) -> dict[str, Any]:
    results = {
        "model_id": model_id,
        "mode": "single",
        "questions": len(questions),
        **summarise(judgments, {q.question_id: q.category for q in questions}),
        "graded_without_reference": sum(bool(j.get("graded_without_reference")) for j in judgments),
    }
    if results["unparseable"]:
        log.warning(
            "mt_bench: %d judgement(s) had no parseable [[rating]]: counted as failures, not scores",
            results["unparseable"],
        )
    log.info("mt_bench: %s score %s over %d turns", model_id, results["score"], results["scored_turns"])
    return results


def _metrics(results: dict[str, Any]) -> dict[str, float]:
    if results["mode"] != "single":
        model = results["pairwise"][results["model_id"]]
        metrics = {"mt_bench/win_rate": _nan(model["win_rate"])}
        metrics.update(
            {f"mt_bench/win_rate_turn_{t}": _nan(v["win_rate"]) for t, v in model["per_turn"].items()}
        )
        return metrics
    metrics = {"mt_bench/score": _nan(results["score"])}
    metrics.update({f"mt_bench/turn_{t}": v["mean"] for t, v in results["per_turn"].items()})
    metrics["mt_bench/unparseable"] = float(results["unparseable"])
    return metrics


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def run(cfg: DictConfig) -> dict[str, float]:
    """The task from the composed eval config; writes the results into the run folder."""
    check_task(cfg)
    out = Path(cfg.paths.output_dir)
    cache = open_cache(Path(cfg.cache_dir) / "mt_bench.jsonl" if cfg.get("cache_dir") else None, "cache_dir")
    model_id, name = default_model_id(cfg), judge_name(cfg)
    stem, pairwise = judge_file_stem(cfg, name), cfg.task.mode != "single"
    prompts = load_judge_prompts(cfg.task.get("judge_prompts"))
    force_reference = cfg.judge.get("backend") == "standin"
    generator_for = _generator_for(cfg, cache)
    source = cfg.task.get("judge_prompts")

    def early_check(qs: list[Question]) -> None:
        needed = needed_after_extension(qs, int(cfg.task.extend_to), pairwise, force_reference)
        check_prompts(prompts, needed, source)

    questions = load_questions(cfg, cache, early_check)
    check_prompts(prompts, needed_prompts(questions, pairwise, force_reference), source)
    if cfg.task.get("answers"):
        answers = _answers_of(str(cfg.task.answers), questions)
    else:
        answers = answer_all(questions, generator_for, _plain(cfg.task.temperatures))
        write_jsonl_atomic(
            out / "model_answer" / answer_file_name(cfg, model_id),
            (answer_record(q.question_id, model_id, answers[q.question_id]) for q in questions),
        )
    judge = build_judge(cfg, cache, pairwise)
    if pairwise:

        def grade(by_model: dict[str, Any], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
            return grade_pairs(judge, name, prompts, questions, by_model, pairs, force_reference)

        records, summary = _pairwise(cfg, questions, answers, model_id, grade)
        write_jsonl_atomic(out / "model_judgment" / f"{stem}_pair.jsonl", records)
        results = {"model_id": model_id, "mode": cfg.task.mode, "judge": name, "pairwise": summary}
        results["errors"] = sum(s["error"] for s in summary.values())
        plot_win_rate_per_turn(summary, out / "win_rate_per_turn.png")
    else:
        judgments = grade_single(judge, name, prompts, questions, answers, model_id, force_reference)
        write_jsonl_atomic(out / "judgments.jsonl", judgments)
        write_jsonl_atomic(out / "model_judgment" / f"{stem}_single.jsonl", judgments)
        results = {**_single_results(judgments, questions, model_id), "judge": name}
    results["generated_turns"] = sum(len(q.generated_turns) for q in questions)
    write_json_atomic(out / "results.json", results)
    if not pairwise and results["per_turn"]:
        plot_per_turn(
            [out, *[Path(p) for p in cfg.task.get("compare_with") or []]], out / "score_per_turn.png"
        )
    return _metrics(results)


def _generator_for(cfg: DictConfig, cache: Any) -> Any:
    """temperature -> the model under test's cached generator (the backend is built on first use)."""
    generators: dict[float, CachedGenerator] = {}
    backend: list[Any] = []

    def generator_for(temperature: float) -> CachedGenerator:
        if not backend:
            backend.append(model_under_test(cfg))
        if temperature not in generators:
            params = SamplingParams(
                temperature=temperature, max_new_tokens=int(cfg.task.max_new_tokens), seed=int(cfg.seed)
            )
            generators[temperature] = CachedGenerator(backend[0], params, cache, kind="mt_bench/answer")
        return generators[temperature]

    return generator_for


def headline_metric(cfg: DictConfig) -> str:
    return "mt_bench/score"
