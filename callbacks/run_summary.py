"""RunSummary: tracks the training loss curve so ``summary.json`` can show the first and last loss."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class RunSummary(L.Callback):
    """Records the loss of each optimizer step (the first micro-batch's) and the wall time.

    ``first_loss``/``last_loss`` are means over the first and last ``window`` steps, which shows a
    trend without the noise of one batch; ``first_step_loss``/``last_step_loss`` are the raw values.
    """

    def __init__(self, window: int = 10):
        self.window = window
        self.losses: list[float] = []
        self.start = time.time()
        self._last_step = -1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.time()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            self.losses.append(float(loss.detach()))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "wall_time_s": round(time.time() - self.start, 2),
            "steps_recorded": len(self.losses),
        }
        if self.losses:
            w = min(self.window, len(self.losses))
            out.update(
                first_step_loss=self.losses[0],
                last_step_loss=self.losses[-1],
                first_loss=sum(self.losses[:w]) / w,
                last_loss=sum(self.losses[-w:]) / w,
            )
        return out
