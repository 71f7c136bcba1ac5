"""A CSVLogger that continues an existing ``metrics.csv`` instead of deleting it.

Lightning's CSV writer removes ``metrics.csv`` when its folder already exists, so a resumed run
(``resume_dir=`` or ``ckpt_path=last`` in the same run folder) would lose the history before the
crash. This writer keeps the file and its header, and appends. ``TrimCSVOnResume`` drops the rows
logged after the checkpoint a run resumes from (they are logged again), so no step appears twice.

Lightning writes a step's row *after* the checkpoints of that step's ``on_train_batch_end``; a
``kill -9`` between the two would leave a checkpoint whose last step has no row, and the resumed run
starts at the next step, so that row would never be written. ``SafeModelCheckpoint``
(``callbacks/checkpoint.py``) therefore hands the step's row to
:meth:`ResumableCSVLogger.log_row_before_checkpoint` first; when Lightning logs the same step right
after, an equal row is not written twice (a different one replaces it).
"""

from __future__ import annotations

import csv
import os
from typing import Any

import lightning as L
from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from utils.atomic import atomic_path


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose run continues across resumes (same arguments)."""

    _early: tuple[int, dict[str, Any]] | None = None  # (step, row) written before a checkpoint

    @rank_zero_only
    def log_row_before_checkpoint(self, metrics: dict[str, Any], step: int) -> None:
        """Write the row of ``step`` now (before a checkpoint of that step is written), once."""
        if self._early is not None and self._early[0] == step:
            return  # the step's second checkpoint file (periodic, then last.ckpt)
        row = convert_tensors_to_scalars(metrics)
        super().log_metrics(row, step)
        self.save()
        self._early = (step, row)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:  # type: ignore[override]
        if self._early is not None and step == self._early[0]:
            _, early = self._early
            self._early = None
            if convert_tensors_to_scalars(metrics) == early:
                return  # already written before the checkpoint
            self.save()
            self.drop_rows_from(step)  # a row that changed after the checkpoint: this one replaces it
        super().log_metrics(metrics, step)

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows whose ``step`` is ``>= step`` from ``metrics.csv`` (rewritten through a
        temporary file beside it); returns how many were dropped."""
        path = os.path.join(self.log_dir, _AppendingWriter.NAME_METRICS_FILE)
        if not os.path.isfile(path):
            return 0
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if not (r.get("step") or "").isdigit() or int(r["step"]) < step]
        if len(kept) == len(rows):
            return 0
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
        return len(rows) - len(kept)


class TrimCSVOnResume(L.Callback):
    """On a resumed fit, drop CSV rows logged after the restored checkpoint's step (rank 0)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.experiment.save()  # rows buffered before the restore go out first
                logger.drop_rows_from(trainer.global_step)
