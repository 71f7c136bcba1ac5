"""The ``reasoning`` task of eval.py (``task.runner: runners.reasoning.run``).

Greedy chain-of-thought, Self-Consistency (maj@k) and Self-Agreement (agree@k, arXiv 2311.08154) on
reasoning questions, run through ``trainer.predict`` (:class:`~lightning_modules.reasoning_predict.
ReasoningEvalModule`) so ``trainer=ddp`` spreads the questions over devices. :func:`run` writes
``results.json`` and ``samples.jsonl`` into the run folder and returns the flat metrics;
:func:`headline_metric` names the metric ``eval.py`` returns to sweepers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from utils.launch_env import is_rank_zero

log = logging.getLogger("quartet.eval")
REQUIRED = ("backend", "task", "decoding", "data", "prompt", "trainer", "paths")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def build_spec(cfg: DictConfig, fewshot_pool: Any = ()) -> Any:
    """The evaluation settings of ``cfg.decoding`` / ``cfg.prompt`` (``ConfigError`` listing problems)."""
    from evaluation.reasoning.spec import ReasoningEvalSpec, SpecError
    from utils.errors import ConfigError

    try:
        return ReasoningEvalSpec.from_config(
            _plain(cfg.decoding), _plain(cfg.prompt), cfg.task.extraction_mode, cfg.seed, fewshot_pool
        )
    except SpecError as e:
        raise ConfigError(e.problems) from None


def validate_eval_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` listing every problem of an evaluation config found before any data is read."""
    from inference.backends.factory import BACKENDS
    from utils.errors import ConfigError

    problems = [f"missing config group '{k}'" for k in REQUIRED if cfg.get(k) is None]
    if problems:
        raise ConfigError(problems)
    missing = sorted(OmegaConf.missing_keys(cfg))
    problems += [f"{k} is required (set {k}=...)" for k in missing if not k.startswith("hydra")]
    name = cfg.backend.get("name")
    if name not in BACKENDS:
        problems.append(f"backend.name={name!r} must be one of {list(BACKENDS)}")
    trainer = cfg.trainer
    if trainer.get("use_distributed_sampler", False):
        problems.append(
            "trainer.use_distributed_sampler must stay false: the question DataModule shards by rank"
        )
    strategy = trainer.get("strategy")
    target = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy or "")
    if target.endswith("ModelParallelStrategy") or target.startswith("fsdp"):
        problems.append(
            "trainer=fsdp shards the model, but each rank generates for its own questions: use trainer=ddp"
        )
    if name == "vllm" and trainer.get("devices", 1) != 1:
        problems.append(
            "backend=vllm spreads the model itself (backend.engine.tensor_parallel_size): keep trainer.devices=1"
        )
    if name == "hf" and cfg.get("model") is None:
        problems.append("backend=hf needs the model group (model=tiny or model=hf model.pretrained=<dir>)")
    if not any(k.split(".")[0] in ("decoding", "prompt", "task", "seed") for k in missing):
        try:
            build_spec(cfg)
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)


def with_benchmark_prompts(spec: Any, datamodule: Any) -> Any:
    """``spec`` with the data module's few-shot pool, and the registered benchmarks' one-line
    descriptions under ``prompt.task_descriptions`` (the config's own entries win)."""
    import dataclasses

    descriptions = {**getattr(datamodule, "task_descriptions", {}), **spec.prompt.task_descriptions}
    prompt = dataclasses.replace(spec.prompt, task_descriptions=descriptions)
    return dataclasses.replace(spec, prompt=prompt, fewshot_pool=tuple(datamodule.fewshot_pool))


def check_prompts(cfg: DictConfig, spec: Any, records: list) -> None:
    """Build every prompt once (few-shot shortages show up here) and check the chat template."""
    from reasoning.prompts import build_cot_prompt
    from utils.errors import ConfigError, QuartetError

    try:
        for rec in records:
            build_cot_prompt(rec, spec.prompt, spec.fewshot_pool)
    except ValueError as e:
        raise ConfigError([f"prompt: {e}"]) from None
    if cfg.backend.name != "hf" or not spec.prompt.chat:
        return
    from inference.chat import has_chat_template
    from models.tokenizer import load_tokenizer

    model = cfg.model
    tok = load_tokenizer(model.tokenizer, bool(model.get("trust_remote_code")), model.get("chat_template"))
    if not has_chat_template(tok):
        raise QuartetError(
            f"tokenizer {model.tokenizer!r} has no chat template, but prompt.chat=true: give one with "
            "model.chat_template='<jinja template>', or send raw prompts with prompt.chat=false"
        )


def run(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.decoding`` on ``cfg.data``; write ``results.json`` + ``samples.jsonl``; return metrics."""
    import dataclasses

    import lightning as L
    from hydra.utils import instantiate

    from callbacks.eval_progress import QuestionProgress
    from callbacks.preemption import PredictInterrupt
    from evaluation.reasoning.evaluator import flat_metrics, print_results_table, write_results
    from inference.backends.openai_http import OpenAIHTTPError
    from inference.chat import ChatTemplateMissingError
    from lightning_modules.reasoning_predict import ReasoningEvalModule
    from utils.errors import QuartetError
    from utils.rich_config import print_and_save_config
    from utils.stop_signals import StopSignals

    validate_eval_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup("predict")
    spec = with_benchmark_prompts(build_spec(cfg), datamodule)
    check_prompts(cfg, spec, datamodule.records)
    module = ReasoningEvalModule(
        spec,
        backend=_plain(cfg.backend),
        model=_plain(cfg.model) if cfg.backend.name == "hf" else None,
        cache_dir=cfg.get("cache_dir"),
        order=datamodule.question_ids,
    )
    if cfg.get("print_config", True) and is_rank_zero():
        keys = [k for k in cfg if k != "model" or cfg.backend.name == "hf"]
        print_and_save_config(OmegaConf.masked_copy(cfg, keys), output_dir / "config_tree.log")
    signals = StopSignals()
    cached = f"the generations so far are cached in {cfg.cache_dir}; " if cfg.get("cache_dir") else ""
    stop = PredictInterrupt(signals, f"{cached}rerun the same command to continue")
    callbacks = [QuestionProgress(), stop] if cfg.get("progress", True) else [stop]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    log.info("evaluating %s on %d questions (output: %s)", spec.methods, len(datamodule.records), output_dir)
    try:
        with signals.installed():
            trainer.predict(module, datamodule=datamodule, return_predictions=False)
    except (ChatTemplateMissingError, OpenAIHTTPError) as e:
        raise QuartetError(str(e)) from None
    results = module.results
    assert results is not None
    results["settings"].update(
        task=cfg.task.name,
        method=cfg.decoding.name,
        data={
            k: _plain(cfg.data.get(k))
            for k in ("path", "paths", "split", "subset", "limit", "fields")
            if k in cfg.data
        },
        benchmarks=[dataclasses.asdict(b) for b in getattr(datamodule, "specs", [])],
        model=_plain(cfg.model) if cfg.backend.name == "hf" else None,
        world_size=trainer.world_size,
    )
    metrics = flat_metrics(results)
    if trainer.is_global_zero:
        res_path, rows_path = write_results(results, output_dir)
        print_results_table(results)
        log.info("wrote %s and %s", res_path, rows_path)
    return metrics


def headline_metric(cfg: DictConfig) -> str:
    """``reasoning/<sa@k | sc@k | greedy>/accuracy`` for the configured method (largest k)."""
    try:
        return f"reasoning/{build_spec(cfg).headline}/accuracy"
    except Exception:  # noqa: BLE001 - an invalid config is reported by evaluate()
        return "reasoning/greedy/accuracy"
