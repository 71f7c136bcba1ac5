"""The ``mt_bench`` task of eval.py (``task.runner: tasks.mt_bench.run``).

1. Read FastChat's ``question.jsonl`` (``data.path``) and, optionally, reference answers
   (``task.reference_answers``); with ``task.extend_to=N``, extend every session to N turns with the
   Ask model (``task.ask_model``), once (the extended file is reused).
2. Answer turn by turn with the model under test (``model`` + ``backend``), or read answers made
   elsewhere (``task.answers``, a FastChat ``model_answer`` file). Answers are written to
   ``model_answer/<model_id>.jsonl`` in FastChat's format.
3. Judge every turn with the 1-10 rating judge (``judge`` group: ``hf``, ``vllm``, ``openai_http``, or the
   tiny demo's ``standin``), prompts from ``evaluation/mt_bench/judge_prompts.py`` or
   ``task.judge_prompts``.
4. Write ``results.json`` (mean, per turn, per category, unparseable count), ``judgments.jsonl``
   (also as ``model_judgment/<judge>_single.jsonl``) and ``score_per_turn.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from evaluation.mt_bench.answering import answer_all, extend_questions
from evaluation.mt_bench.fastchat_format import (
    Question,
    answer_record,
    judgment_record,
    read_answers,
    read_questions,
    write_questions,
)
from evaluation.mt_bench.judge_prompts import judge_messages, load_judge_prompts, prompt_name
from evaluation.mt_bench.report import plot_per_turn, summarise
from inference.generation_cache import CachedGenerator, build_generator, open_cache, sampling_params
from inference.judges import RatingJudge
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
        return HFBackend(model, tok, batch_size=int(options.get("batch_size", 8)), model_id=model_id)
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


def answer_file_name(cfg: DictConfig, model_id: str) -> str:
    """``model_answer/<this>``: ``task.model_id`` as given (a path is refused), or the default id with
    each ``/`` as ``_`` (``org/model`` -> ``org_model.jsonl``); never a path out of the run folder."""
    if cfg.task.get("model_id") is not None:
        return file_name_part(cfg.task.model_id, "task.model_id") + ".jsonl"
    key = "backend.model" if cfg.backend.name == "openai_http" else "the model id"
    stem = file_name_part(model_id, key, derived=True, fix="set task.model_id=<a plain file name>")
    return stem + ".jsonl"


def judge_name(cfg: DictConfig) -> str:
    """The judge's name in ``judgment_record`` (``judge.model`` or ``judge.path``; the stand-in's own)."""
    if cfg.judge.get("backend") == "standin":
        from evaluation.mt_bench.standin_judge import NAME

        return NAME
    return str(cfg.judge.get("model") or cfg.judge.get("path"))


def judgment_file_name(cfg: DictConfig) -> str:
    """``model_judgment/<judge>_single.jsonl`` with the judge's name as one safe component."""
    stem = file_name_part(
        judge_name(cfg), "judge.model" if cfg.judge.get("model") else "judge.path", derived=True
    )
    return f"{stem}_single.jsonl"


def load_questions(cfg: DictConfig, generator_for: Any, cache: Any) -> list[Question]:
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
            "mt_bench: reusing the extended questions in %s (written once, so every model answers the same)",
            extended,
        )
        return read_questions(extended)
    if not t.get("ask_model"):
        raise ConfigError(["task.extend_to needs task.ask_model (e.g. task.ask_model.path=<Ask model dir>)"])
    ask = build_generator(_plain(t.ask_model), "task.ask_model", cache, kind="mt_bench/ask")
    questions = extend_questions(questions, int(t.extend_to), generator_for, ask, _plain(t.temperatures))
    write_questions(extended, questions)
    log.info("mt_bench: wrote the extended questions to %s", extended)
    return questions


def build_rating_judge(cfg: DictConfig, cache: Any) -> tuple[RatingJudge, str]:
    j = _plain(cfg.judge)
    if j.get("backend") == "standin":
        from evaluation.mt_bench.standin_judge import NAME, standin_judge

        return RatingJudge(standin_judge), NAME
    gen = build_generator(
        j, "judge", cache, kind="mt_bench/judge", chunk_size=int(j.pop("chunk_size", 32) or 32)
    )
    return RatingJudge(gen), str(j.get("model") or j.get("path"))


def judge_answers(
    cfg: DictConfig, questions: list[Question], answers: dict[Any, list[str]], model_id: str, cache: Any
) -> list[dict[str, Any]]:
    judge, name = build_rating_judge(cfg, cache)
    prompts = load_judge_prompts(cfg.task.get("judge_prompts"))
    force_reference = cfg.judge.get("backend") == "standin"
    items = []
    for q in questions:
        for turn in range(1, len(answers[q.question_id]) + 1):
            name = prompt_name("math" if force_reference else q.category, turn)
            msgs = judge_messages(prompts[name], q.turns, answers[q.question_id], turn, q.reference)
            items.append((q, turn, prompts[name].name, msgs))
    verdicts = judge([msgs for *_, msgs in items])
    return [
        judgment_record(q.question_id, model_id, (name, pname), msgs[-1]["content"], v.text, v.value, turn)
        for (q, turn, pname, msgs), v in zip(items, verdicts)
    ]


def check_start_up(cfg: DictConfig, model_id: str) -> tuple[str, str]:
    """Before anything is written or generated: the file names made from the config and the sampling
    settings of the judge and the Ask model, every problem listed in one ``ConfigError``. Returns the
    answer and judgment file names."""
    problems: list[str] = []
    names: list[str] = []
    for check in (lambda: answer_file_name(cfg, model_id), lambda: judgment_file_name(cfg)):
        try:
            names.append(check())
        except ConfigError as e:
            problems += e.problems
    samplers = {
        "judge": cfg.judge,
        "task.ask_model": cfg.task.get("ask_model") if cfg.task.get("extend_to") else None,
    }
    for what, node in samplers.items():
        if node is not None and node.get("backend") != "standin":
            try:
                sampling_params(_plain(node), what)
            except ConfigError as e:
                problems += e.problems
    if problems:
        raise ConfigError(problems)
    return names[0], names[1]


def run(cfg: DictConfig) -> dict[str, float]:
    """The task from the composed eval config; writes the results into the run folder."""
    if cfg.get("judge") is None:
        raise ConfigError(
            ["task=mt_bench needs a judge: judge=hf|vllm|openai_http (or judge=standin for the tiny demo)"]
        )
    out = Path(cfg.paths.output_dir)
    model_id = default_model_id(cfg)
    answer_file, judge_file = check_start_up(cfg, model_id)
    cache = open_cache(Path(cfg.cache_dir) / "mt_bench.jsonl" if cfg.get("cache_dir") else None, "cache_dir")
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

    questions = load_questions(cfg, generator_for, cache)
    if cfg.task.get("answers"):
        answers = read_answers(cfg.task.answers)
        missing = [q.question_id for q in questions if len(answers.get(q.question_id, [])) < len(q.turns)]
        if missing:
            raise DataError(
                f"task.answers={cfg.task.answers}: no answer for every turn of questions {missing[:10]}"
            )
    else:
        answers = answer_all(questions, generator_for, _plain(cfg.task.temperatures))
        write_jsonl_atomic(
            out / "model_answer" / answer_file,
            (answer_record(q.question_id, model_id, answers[q.question_id]) for q in questions),
        )
    judgments = judge_answers(cfg, questions, answers, model_id, cache)
    write_jsonl_atomic(out / "judgments.jsonl", judgments)
    write_jsonl_atomic(out / "model_judgment" / judge_file, judgments)
    results = {
        "model_id": model_id,
        "questions": len(questions),
        **summarise(judgments, {q.question_id: q.category for q in questions}),
    }
    results["generated_turns"] = sum(len(q.generated_turns) for q in questions)
    write_json_atomic(out / "results.json", results)
    if results["per_turn"]:
        plot_per_turn(
            [out, *[Path(p) for p in cfg.task.get("compare_with") or []]], out / "score_per_turn.png"
        )
    if results["unparseable"]:
        log.warning(
            "mt_bench: %d judgement(s) had no parseable [[rating]]: counted as failures, not scores",
            results["unparseable"],
        )
    log.info("mt_bench: %s score %s over %d turns", model_id, results["score"], results["scored_turns"])
    metrics = {"mt_bench/score": results["score"] if results["score"] is not None else float("nan")}
    metrics.update({f"mt_bench/turn_{t}": v["mean"] for t, v in results["per_turn"].items()})
    metrics["mt_bench/unparseable"] = float(results["unparseable"])
    return metrics


def headline_metric(cfg: DictConfig) -> str:
    return "mt_bench/score"
