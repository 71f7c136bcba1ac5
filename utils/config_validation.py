"""Start-up validation of the composed config: every problem is collected and reported at once."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from utils.batch_kinds import batch_kind_problem
from utils.data_paths import expand_pattern, path_exists
from utils.errors import ConfigError, QuartetError
from utils.model_paths import check_model_location

REQUIRED = ("model", "module", "data", "trainer", "paths")


def _missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted paths of ``???`` values (interpolations that point at them are not listed twice)."""
    out = []
    for key in node:
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            out.append(path)
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node._get_node(key), DictConfig):
            out += _missing_keys(node[key], f"{path}.")
    return sorted(out)


def _positive_finite(value: object) -> bool:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(x) and x > 0


def _precisions() -> set[str]:
    """Every ``trainer.precision`` Lightning accepts (its own ``_PRECISION_INPUT`` list), as text."""
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT

    out: set[str] = set()
    for part in typing.get_args(_PRECISION_INPUT):
        out |= {str(v) for v in typing.get_args(part)}
    return out


def seed_problem(seed: object) -> str | None:
    """``seed`` must fit numpy's seed range (what ``seed_everything`` and the samplers pass on)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        return f"seed={seed} must be an integer in [0, 2**32 - 1]"
    return None


def value_problems(cfg: DictConfig) -> list[str]:
    """Values that Lightning or numpy would reject later with a traceback: the trainer's precision,
    checkpoint intervals and the seed (one line each)."""
    problems = []
    precision = cfg.trainer.get("precision")
    if precision is not None and str(precision) not in _precisions():
        problems.append(f"trainer.precision={precision} must be one of {', '.join(sorted(_precisions()))}")
    for name, node in (cfg.get("callbacks") or {}).items():
        if not isinstance(node, DictConfig):
            continue
        for key in ("every_n_train_steps", "every_n_epochs"):
            v = node.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                problems.append(f"callbacks.{name}.{key}={v} must be an integer >= 0 (0: off)")
    seed = seed_problem(cfg.get("seed", 0))
    return problems + ([seed] if seed else [])


def validate_train_config(
    cfg: DictConfig, model_problems: Callable[[Mapping[str, Any]], list[str]] | None = None
) -> None:
    """Raise ``ConfigError`` listing every problem found in a training config. ``model_problems`` is
    the model kind's own check (``models.model_config_problems``, i.e. ``ModelKind.problems``)."""
    problems: list[str] = []
    for key in REQUIRED:
        if key not in cfg or cfg[key] is None:
            problems.append(f"missing config group '{key}'")
    if problems:
        raise ConfigError(problems)
    missing = _missing_keys(cfg)
    problems += [f"{k} is required (set {k}=...)" for k in missing if not k.startswith("hydra")]
    model, data, trainer = cfg.model, cfg.data, cfg.trainer
    if model_problems is not None and not any(k.startswith("model.") for k in missing):
        problems += model_problems(OmegaConf.to_container(model, resolve=True))  # the kind's own checks
    if not any(k.startswith("model.") for k in missing):  # else model.tokenizer may point at a ???
        # One check per location; a tokenizer at the model's location is reported as model.pretrained.
        locations = {model.get("tokenizer"): "model.tokenizer", model.get("pretrained"): "model.pretrained"}
        for location, key in locations.items():
            if isinstance(location, str):
                try:
                    check_model_location(location, key)
                except QuartetError as e:
                    problems.append(str(e))
    for k in ("batch_size", "eval_batch_size"):
        if data.get(k) is not None and (not isinstance(data[k], int) or data[k] < 1):
            problems.append(f"data.{k}={data[k]} must be a positive integer")
    path = data.get("path") if "path" not in missing else None
    try:
        pattern = expand_pattern(path) if isinstance(path, str) else None  # a glob: must match a file
    except QuartetError as e:
        problems.append(str(e))
        pattern = []
    if (
        pattern is None
        and isinstance(path, str)
        and path.endswith((".jsonl", ".json", ".parquet"))
        and not path_exists(path)
    ):
        problems.append(f"data.path={path}: file not found")
    opt = cfg.module.get("optimizer") or {}
    if "lr" in opt and not _positive_finite(opt.lr):
        problems.append(f"module.optimizer.lr={opt.lr} must be a finite number > 0")
    for k in ("max_epochs", "max_steps"):
        v = trainer.get(k)
        if v is not None and (not isinstance(v, int) or v < -1 or v == 0):
            problems.append(f"trainer.{k}={v} must be a positive integer (or -1)")
    if cfg.get("nonfinite", "stop") not in ("stop", "skip"):
        problems.append(f"nonfinite={cfg.get('nonfinite')} must be 'stop' or 'skip'")
    manual = str(cfg.module.get("_target_", "")).endswith("OnlineRLModule")
    if manual and (trainer.get("gradient_clip_val") or trainer.get("accumulate_grad_batches", 1) != 1):
        problems.append(
            "module=online_rl optimises by hand (inner_steps optimiser steps per batch): set "
            "trainer.gradient_clip_val=null (module.max_grad_norm clips) and trainer.accumulate_grad_batches=1"
        )
    if trainer.get("accumulate_grad_batches", 1) < 1:
        problems.append("trainer.accumulate_grad_batches must be >= 1")
    if trainer.get("use_distributed_sampler", False):
        problems.append(
            "trainer.use_distributed_sampler must stay false: Quartet's resumable sampler shards by rank"
        )
    problems += value_problems(cfg)
    kinds = batch_kind_problem(cfg.module, data)  # e.g. module=capo data=chat
    if kinds:
        problems.append(kinds)
    if cfg.module.get("shared_prompt") is True and data.get("packing"):
        problems.append(
            "module.shared_prompt=true runs each pair's prompt once on padded rows, and data.packing=true "
            "lays the rows end to end: set data.packing=false, or module.shared_prompt=auto (packed batches "
            "then take the plain forward)"
        )
    ckpt = cfg.get("ckpt_path")
    if ckpt and ckpt != "last" and not path_exists(str(ckpt)):
        problems.append(
            f"ckpt_path={ckpt}: checkpoint not found (use a file, a sharded checkpoint folder, or 'last')"
        )
    if problems:
        raise ConfigError(problems)
