"""NonFiniteGuard: what happens when a training step's loss or gradients are NaN or infinite.

``nonfinite=stop`` (default) raises ``NonFiniteLossError`` naming the step *before* the optimizer
applies the update, so the weights (and every checkpoint) stay finite and the run exits non-zero.
``nonfinite=skip`` drops that update instead (gradients set to ``None``, which every torch optimizer
skips, including its moment estimates) and counts it in ``summary.json``.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from utils.errors import NonFiniteLossError

log = logging.getLogger(__name__)
POLICIES = ("stop", "skip")


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """True when every element of every tensor is finite (one device sync for all of them)."""
    checks = [torch.isfinite(_local(t).detach()).all() for t in tensors if t is not None]
    return not checks or bool(torch.stack(checks).all())


def agreed(trainer: L.Trainer, flag: bool) -> bool:
    """``flag`` OR-ed over ranks (every rank must take the same branch around collectives)."""
    if trainer.world_size > 1:
        return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))
    return flag


def parameters_finite(trainer: L.Trainer, module: torch.nn.Module) -> bool:
    """True when every parameter on every rank is finite (collective under DDP/FSDP)."""
    return not agreed(trainer, not all_finite(list(module.parameters())))


class NonFiniteGuard(L.Callback):
    """Checks each optimizer step's loss (``on_before_backward``) and gradients
    (``on_before_optimizer_step``) and applies ``policy`` (``stop`` or ``skip``)."""

    def __init__(self, policy: str = "stop"):
        if policy not in POLICIES:
            raise ValueError(f"nonfinite={policy!r} must be one of {POLICIES}")
        self.policy = policy
        self.skipped_steps: list[int] = []
        self._losses: list[torch.Tensor] = []  # this optimizer step's (micro-batch) losses

    @property
    def skipped(self) -> int:
        return len(self.skipped_steps)

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        # Kept, not checked here: a check is a host-device sync, and one per step (below) covers all.
        self._losses.append(loss.detach())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        losses, self._losses = self._losses, []
        params = [p for p in pl_module.parameters() if p.grad is not None]
        bad = agreed(trainer, not all_finite([*losses, *(p.grad for p in params)]))
        if not bad:
            return
        bad_loss = next((float(x.float().sum()) for x in losses if not torch.isfinite(x).all()), None)
        step = trainer.global_step
        what = f"loss {bad_loss}" if bad_loss is not None else "gradients (the loss was finite)"
        if self.policy == "stop":
            raise NonFiniteLossError(
                f"non-finite training {what} at step {step} (epoch {trainer.current_epoch}); stopped before "
                "the update, so the weights and checkpoints stay finite. Lower module.optimizer.lr or "
                "trainer.gradient_clip_val, or pass nonfinite=skip to skip such steps"
            )
        for p in params:
            p.grad = None
        self.skipped_steps.append(step)
        log.warning("non-finite %s at step %d: update skipped (%d so far)", what, step, self.skipped)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": list(self.skipped_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = list(state_dict.get("skipped_steps", []))
