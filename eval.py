"""Quartet evaluation: `python eval.py [task=...] [decoding=...] [model=...|backend=...] [key=value]`.

``main`` is a thin Hydra wrapper around the pure, importable ``evaluate(cfg)``, which runs the task
named by ``cfg.task.runner`` (as ``generate.py`` runs ``cfg.stage.runner``). A runner is a function
``run(cfg) -> dict[str, float]`` that writes its results into the run folder and returns flat metrics;
its module may define ``headline_metric(cfg) -> str``, the metric ``main`` returns to sweepers when
``optimized_metric`` is not set.

Tasks: ``task=reasoning`` / ``task=reasoning_mixed`` (``runners/reasoning.py``): greedy CoT,
Self-Consistency and Self-Agreement (arXiv 2311.08154) under ``trainer.predict``.
The papers' benchmarks by name (``task=gsm8k``, ``task=math``, ..., ``task=reasoning_mix``; the registry
is ``reasoning/benchmarks.py``) run through the same runner; recipes: ``experiment=repro/<name>``.
``task=lm_eval`` (``runners/lm_eval.py``): lm-eval's benchmarks (log-likelihood multiple choice, BBH) on
the model.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("QUARTET_ROOT", str(ROOT))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from utils.entrypoint import run_cli, run_main  # noqa: E402
from utils.hydra_resolvers import register_resolvers  # noqa: E402

register_resolvers()
log = logging.getLogger("quartet.eval")


def task_runner(cfg: DictConfig) -> Callable[[DictConfig], dict[str, Any]]:
    """The function named by ``cfg.task.runner`` (``ConfigError`` when absent or not importable)."""
    from hydra.utils import get_method

    from utils.errors import ConfigError

    task = cfg.get("task")
    if task is None or not task.get("runner"):
        raise ConfigError(
            [
                "no task runner: pass task=<name> (see conf/task/); a config saved before task.runner "
                "existed needs task.runner=runners.reasoning.run"
            ]
        )
    try:
        return get_method(task.runner)
    except Exception as e:  # noqa: BLE001 - a bad runner path is a config error
        raise ConfigError([f"task.runner={task.runner!r} can't be imported ({e})"]) from None


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run ``cfg.task``'s runner; return its flat metrics."""
    runner = task_runner(cfg)
    log.info("running task %s (%s)", cfg.task.get("name"), cfg.task.runner)
    return runner(cfg)


def headline_metric(cfg: DictConfig) -> str | None:
    """The runner module's ``headline_metric(cfg)``, or None when it has none (or the task is invalid)."""
    try:
        module = inspect.getmodule(task_runner(cfg))
    except Exception:  # noqa: BLE001 - an invalid config is reported by evaluate()
        return None
    fn = getattr(module, "headline_metric", None)
    return fn(cfg) if fn is not None else None


# An absolute conf/ beside this file: the console script imports this module (Hydra would otherwise look
# for a python package `conf`), `python eval.py` runs it as a file.
@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    if not cfg.get("optimized_metric"):
        with open_dict(cfg):
            cfg.optimized_metric = headline_metric(cfg)
    return run_main(cfg, evaluate, closing_line=True)


def cli() -> None:
    """The ``quartet-eval`` console script (``pip install -e .``): the same as ``python eval.py``."""
    run_cli(main)


if __name__ == "__main__":
    cli()
