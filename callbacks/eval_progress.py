"""QuestionProgress: a rich progress bar over questions (not batches) for ``trainer.predict`` in eval.py.

Rank 0 shows its own shard; under DDP the other ranks advance in step with it.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class QuestionProgress(L.Callback):
    """Counts the questions of each finished predict batch (a batch is a list of questions)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None
        self.done = 0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.done = 0
        if not trainer.is_global_zero:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        dm = trainer.datamodule
        total = len(dm.shard_records())
        label = "questions" if trainer.world_size == 1 else f"questions (rank 0 of {trainer.world_size})"
        self.bar = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.task = self.bar.add_task(label, total=total)
        self.bar.start()

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.done += len(batch)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
