"""SafeModelCheckpoint: Lightning's ``ModelCheckpoint`` plus two guarantees of the run folder.

1. No checkpoint with non-finite weights is ever written (a finite ``last.ckpt`` is never replaced
   by a NaN one): every save first checks the parameters on all ranks.
2. ``last.ckpt`` always holds the final state: at the step where ``trainer.max_steps`` is reached
   (mid-epoch included; the same point a periodic checkpoint is taken, so resuming and extending with
   a larger ``max_steps`` is exact), or at the end of training otherwise.
3. A checkpoint taken at the end of a training batch is written after that step's ``metrics.csv`` row
   (:func:`log_row_before_checkpoint`): Lightning logs the row only after the checkpoint hooks, so a
   ``kill -9`` in between would lose it for good (the resume starts at the next step).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.csv_logger import ResumableCSVLogger
from callbacks.nonfinite import parameters_finite
from utils.errors import NonFiniteLossError


class SafeModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) that refuses non-finite weights and saves the final step."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._fit_start_step = 0
        self._in_batch_end = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._fit_start_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._in_batch_end = True
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if 0 < trainer.max_steps <= trainer.global_step:
                self.save_last_now(trainer)
        finally:
            self._in_batch_end = False

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
        if self._in_batch_end:
            log_row_before_checkpoint(trainer)
        super()._save_checkpoint(trainer, filepath)


def log_row_before_checkpoint(trainer: L.Trainer) -> None:
    """Hand this training step's row to the resumable CSV loggers now, as Lightning will log it right
    after the ``on_train_batch_end`` hooks (same metrics, same step). Every rank computes the metrics
    (a ``sync_dist`` metric reduces across ranks); only rank 0's loggers write."""
    connector = trainer._logger_connector
    loggers = [lg for lg in trainer.loggers if isinstance(lg, ResumableCSVLogger)]
    if not loggers or not connector.should_update_logs:
        return
    metrics = dict(connector.metrics["log"])
    if not metrics:
        return
    if "step" not in metrics:
        metrics.setdefault("epoch", trainer.current_epoch)
    step = int(metrics.pop("step", trainer.fit_loop.epoch_loop._batches_that_stepped))
    for logger in loggers:
        logger.log_row_before_checkpoint(metrics, step)
