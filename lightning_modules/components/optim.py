"""Optimizer and LR-schedule construction shared by every LightningModule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class WarmupCosine:
    """LR multiplier: linear warmup from 0 to 1 over ``warmup_steps``, then cosine decay to
    ``min_lr_ratio`` at ``total_steps`` (constant after). A callable object, so ``LambdaLR``'s
    ``state_dict`` saves its fields and a resumed schedule is exact."""

    def __init__(
        self, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0, schedule: str = "cosine"
    ):
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))
        self.min_lr_ratio = float(min_lr_ratio)
        self.schedule = schedule

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.schedule == "linear":
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * (1 - progress)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(
    named_params: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms and 1-D parameters."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer_and_scheduler(
    module: torch.nn.Module,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    scheduler_cfg: dict[str, Any] | None,
    total_steps: int,
) -> dict[str, Any]:
    """Return Lightning's ``configure_optimizers`` dict: the optimizer from a ``_partial_`` factory and a
    per-step warmup+cosine (or linear/constant) schedule. ``scheduler_cfg`` keys: ``warmup_steps``
    or ``warmup_ratio`` (of ``total_steps``), ``min_lr_ratio``, ``schedule``."""
    weight_decay = float(getattr(optimizer_factory, "keywords", {}).get("weight_decay", 0.0))
    optimizer = optimizer_factory(param_groups(module.named_parameters(), weight_decay))
    if not scheduler_cfg:
        return {"optimizer": optimizer}
    warmup = scheduler_cfg.get("warmup_steps")
    if warmup is None:
        warmup = round(float(scheduler_cfg.get("warmup_ratio", 0.0)) * total_steps)
    fn = WarmupCosine(
        warmup, total_steps, scheduler_cfg.get("min_lr_ratio", 0.0), scheduler_cfg.get("schedule", "cosine")
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
    }
