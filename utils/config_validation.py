"""Start-up validation of the composed config: every problem is collected and reported at once."""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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


def validate_train_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` listing every problem found in a training config."""
    problems: list[str] = []
    for key in REQUIRED:
        if key not in cfg or cfg[key] is None:
            problems.append(f"missing config group '{key}'")
    if problems:
        raise ConfigError(problems)
    missing = _missing_keys(cfg)
    problems += [f"{k} is required (set {k}=...)" for k in missing if not k.startswith("hydra")]
    model, data, trainer = cfg.model, cfg.data, cfg.trainer
    if model.get("kind") == "tiny":
        for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if k in model and (not isinstance(model[k], int) or model[k] < 1):
                problems.append(f"model.{k}={model[k]} must be a positive integer")
        if all(k in model for k in ("hidden_size", "num_heads")) and model.hidden_size % max(
            1, model.num_heads
        ):
            problems.append(
                f"model.hidden_size={model.hidden_size} must be divisible by model.num_heads={model.num_heads}"
            )
    if (
        model.get("kind") in ("hf", "moe_upcycle")
        and "model.pretrained" not in missing
        and not model.get("pretrained")
    ):
        problems.append(f"model.pretrained must name a folder or hub id for model.kind={model.get('kind')}")
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
    if isinstance(path, str) and (path.endswith((".jsonl", ".json", ".parquet")) and not Path(path).exists()):
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
    ckpt = cfg.get("ckpt_path")
    if ckpt and ckpt != "last" and not Path(str(ckpt)).exists():
        problems.append(
            f"ckpt_path={ckpt}: checkpoint not found (use a file, a sharded checkpoint folder, or 'last')"
        )
    if problems:
        raise ConfigError(problems)
