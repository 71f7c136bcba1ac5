"""SafeModelCheckpoint: Lightning's ``ModelCheckpoint`` plus two guarantees of the run folder.

1. No checkpoint with non-finite weights is ever written (a finite ``last.ckpt`` is never replaced
   by a NaN one): every save first checks the parameters on all ranks.
2. ``last.ckpt`` always holds the final state: at the step where ``trainer.max_steps`` is reached
   (mid-epoch included; the same point a periodic checkpoint is taken, so resuming and extending with
   a larger ``max_steps`` is exact), or at the end of training otherwise.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.nonfinite import parameters_finite
from utils.errors import NonFiniteLossError


class SafeModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) that refuses non-finite weights and saves the final step."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._fit_start_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._fit_start_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if 0 < trainer.max_steps <= trainer.global_step:
            self.save_last_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.global_step > self._fit_start_step:  # trained in this fit (0 steps: keep last.ckpt)
            self.save_last_now(trainer)

    def save_last_now(self, trainer: L.Trainer) -> str | None:
        """Write ``last.ckpt`` at the current step unless it already holds it; returns its path."""
        if not self.save_last or self._should_skip_saving_checkpoint(trainer):
            return self.last_model_path or None
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        return self.last_model_path

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if not parameters_finite(trainer, trainer.lightning_module):
            raise NonFiniteLossError(
                f"the weights are non-finite at step {trainer.global_step}; not writing {filepath} "
                "(the checkpoints already written hold finite weights)"
            )
        super()._save_checkpoint(trainer, filepath)
