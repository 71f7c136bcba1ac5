"""The ``lm_eval`` task of eval.py (``task.runner: runners.lm_eval.run``).

Runs EleutherAI's lm-evaluation-harness on the model Quartet loads (``model=tiny|hf|moe...``; an
exported Top-P MoE folder loads through Quartet's registered classes, without ``trust_remote_code``):
the loaded model and tokenizer are wrapped in lm-eval's ``HFLM`` and passed to
``lm_eval.simple_evaluate``, one requested task (or group) at a time, so that a MoE model's experts per
token are measured during each task's own forward passes (:class:`~evaluation.lm_eval_bridge.
ExpertCounter`). The scores are lm-eval's, equal to what the ``lm_eval`` command gives on the same
model and task (``tests/test_lm_eval_bridge.py`` checks it).

Writes into the run folder:

- ``results.json``: ``metrics[task]`` (``acc``, ``acc_stderr``, ``acc_norm``, ``acc_norm_stderr``, ...,
  ``num_samples``), ``groups[group]``, ``experts_per_token[task]`` and ``routing[task]`` (MoE only),
  ``settings``, and ``lm_eval_files`` (the harness's own files);
- ``<task.output_subdir>/``: lm-eval's ``results_<date>.json`` and ``samples_<task>_<date>.jsonl``, as
  the ``lm_eval`` command writes them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from evaluation.lm_eval_bridge import (
    ExpertCounter,
    check_include_path,
    flat_metrics,
    import_lm_eval,
    merge_lm_eval_results,
    quartet_results,
    resolve_tasks,
)
from utils.atomic import write_json_atomic

log = logging.getLogger("quartet.eval")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def prepare_tasks(cfg: DictConfig) -> tuple[Any, dict[str, list[str]]]:
    """Start-up checks, before any model is loaded: lm-eval importable, ``task.include_path`` a folder,
    every name in ``task.tasks`` known. Returns lm-eval's ``TaskManager`` and the resolved names."""
    from utils.errors import ConfigError

    if cfg.get("model") is None:
        raise ConfigError(
            ["task=lm_eval needs the model group (model=hf model.pretrained=<dir>, or model=tiny)"]
        )
    include_path = check_include_path(cfg.task.get("include_path"))
    import_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is None and not cfg.task.get("include_defaults", True):
        raise ConfigError(["task.include_defaults=false needs task.include_path=<folder of task YAMLs>"])
    manager = TaskManager(
        include_path=include_path, include_defaults=bool(cfg.task.get("include_defaults", True))
    )
    return manager, resolve_tasks(manager, list(_plain(cfg.task.tasks) or []))


def load_model(cfg: DictConfig) -> tuple[Any, Any, str]:
    """The model under test (``eval`` mode, on ``task.device``), its tokenizer and a name for it."""
    import torch

    from models import build_model, load_tokenizer

    m = _plain(cfg.model)
    tok = load_tokenizer(m["tokenizer"], bool(m.get("trust_remote_code", False)), m.get("chat_template"))
    device = cfg.task.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(m, tok).eval().to(device)
    return model, tok, str(m.get("pretrained") or m.get("kind", "model"))


def evaluate_tasks(cfg: DictConfig, lm: Any, manager: Any, tasks: dict[str, list[str]], name: str) -> tuple:
    """``simple_evaluate`` once per requested name, each inside its own :class:`ExpertCounter`.
    Returns (lm-eval's merged results, routing per requested name, the evaluation tracker)."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    t = cfg.task
    tracker = EvaluationTracker(output_path=str(Path(cfg.paths.output_dir) / t.output_subdir))
    chat = bool(t.apply_chat_template)
    multiturn = chat if t.get("fewshot_as_multiturn") is None else bool(t.fewshot_as_multiturn)
    parts, routing = [], {}
    for requested, matched in tasks.items():
        log.info("lm_eval: %s (%s)", requested, ", ".join(matched))
        with ExpertCounter(lm.model) as counter:
            part = lm_eval.simple_evaluate(
                model=lm,
                model_args={"pretrained": name},
                tasks=matched,
                num_fewshot=t.get("num_fewshot"),
                batch_size=t.batch_size,
                max_batch_size=t.get("max_batch_size"),
                limit=t.get("limit"),
                bootstrap_iters=int(t.bootstrap_iters),
                log_samples=bool(t.log_samples),
                evaluation_tracker=tracker,
                system_instruction=t.get("system_instruction"),
                apply_chat_template=chat,
                fewshot_as_multiturn=multiturn,
                gen_kwargs=_plain(t.get("gen_kwargs")),
                task_manager=manager,
            )
        parts.append(part)
        routing[requested] = counter.summary()
    return merge_lm_eval_results(parts), routing, tracker


def save_lm_eval_files(tracker: Any, merged: dict[str, Any], folder: Path) -> list[str]:
    """lm-eval's own files, written by its ``EvaluationTracker`` as the ``lm_eval`` command writes them;
    returns their paths relative to the run folder."""
    before = set(folder.rglob("*")) if folder.exists() else set()
    samples = merged.pop("samples", None)
    tracker.save_results_aggregated(results=merged, samples=samples)
    for task_name in samples or {}:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    written = sorted(p for p in folder.rglob("*") if p.is_file() and p not in before)
    return [str(p.relative_to(folder.parent)) for p in written]


def print_table(merged: dict[str, Any], results: dict[str, Any]) -> None:
    from lm_eval.utils import make_table

    print(make_table(merged))
    if merged.get("groups"):
        print(make_table(merged, "groups"))
    for name, k in results.get("experts_per_token", {}).items():
        print(f"{name}: {k:.4f} experts per token")


def run(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.model`` on ``cfg.task.tasks`` with lm-eval; write ``results.json``; return metrics."""
    manager, tasks = prepare_tasks(cfg)
    from lm_eval.models.huggingface import HFLM

    model, tok, name = load_model(cfg)
    t = cfg.task
    lm = HFLM(
        pretrained=model,
        tokenizer=tok,
        backend="causal",
        batch_size=t.batch_size,
        max_batch_size=t.get("max_batch_size") or 64,
        max_length=t.get("max_length"),
    )
    merged, routing, tracker = evaluate_tasks(cfg, lm, manager, tasks, name)
    out = Path(cfg.paths.output_dir)
    results = quartet_results(merged, tasks, routing)
    results["lm_eval_files"] = save_lm_eval_files(tracker, merged, out / t.output_subdir)
    results["settings"] = {
        "task": t.name,
        "lm_eval_version": _lm_eval_version(),
        "tasks": list(tasks),
        "include_path": check_include_path(t.get("include_path")),
        "model": _plain(cfg.model),
        **{k: _plain(t.get(k)) for k in ("num_fewshot", "limit", "batch_size", "apply_chat_template")},
        "n-shot": merged.get("n-shot", {}),
        "versions": merged.get("versions", {}),
    }
    write_json_atomic(out / "results.json", results)
    print_table(merged, results)
    log.info("lm_eval: wrote %s", out / "results.json")
    return flat_metrics(results)


def _lm_eval_version() -> str:
    import lm_eval

    return str(getattr(lm_eval, "__version__", "unknown"))


def headline_metric(cfg: DictConfig) -> str:
    """``lm_eval/<first task>/acc``: the first requested task's accuracy."""
    tasks = _plain(cfg.task.get("tasks")) or ["task"]
    return f"lm_eval/{tasks[0]}/acc"
