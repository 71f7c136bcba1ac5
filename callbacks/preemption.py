"""GracefulInterrupt: SIGTERM, SIGUSR1 (SLURM's pre-emption warning) and SIGINT save ``last.ckpt`` at
the current step and stop training with ``TrainingInterrupted`` (exit status 128 + signal).

The handler only records the signal; the save happens at the end of the current optimizer step
(``on_train_batch_end``, the point where periodic checkpoints are taken), so ``resume_dir=<run>`` or
``ckpt_path=last`` continues exactly. Lightning's own SIGTERM handling is replaced during training:
it would end ``fit`` with a ``SystemExit`` of status 0 and nothing saved. Under SLURM with
auto-requeue (Lightning's ``SLURMEnvironment``), SIGTERM and the requeue signal stay with Lightning,
which saves an HPC checkpoint and requeues the job; only SIGINT is handled here.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

from callbacks.checkpoint import SafeModelCheckpoint
from callbacks.nonfinite import agreed, parameters_finite
from utils.errors import NonFiniteLossError, TrainingInterrupted

log = logging.getLogger(__name__)


class GracefulInterrupt(L.Callback):
    """Turn a stop signal into a saved ``last.ckpt`` and a ``TrainingInterrupted`` at the next step
    boundary. Without a ``SafeModelCheckpoint`` that saves ``last``, it writes
    ``<run_dir>/checkpoints/last.ckpt`` itself."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.last_path = self.run_dir / "checkpoints" / "last.ckpt"
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    # ---- signal handlers --------------------------------------------------------------------
    def _signals(self, trainer: L.Trainer) -> list[int]:
        env = trainer._accelerator_connector.cluster_environment
        if isinstance(env, SLURMEnvironment) and env.auto_requeue:
            return [signal.SIGINT]  # Lightning saves and requeues on SIGUSR1/SIGTERM
        return [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            log.warning("received %s: saving last.ckpt at the end of this step", signal.Signals(signum).name)
            if signum == signal.SIGINT:  # a second Ctrl+C stops at once
                signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers its SIGTERM handler just before the training loop: replace it here.
        if threading.current_thread() is not threading.main_thread():
            return
        if trainer.received_sigterm:
            self.received = signal.SIGTERM
        for signum in self._signals(trainer):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # ---- the save ------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not agreed(trainer, self.received is not None):
            return
        signum = self.received if self.received is not None else signal.SIGTERM  # another rank's signal
        path = self._save_last(trainer)
        _log_this_step(trainer)
        name = signal.Signals(signum).name
        raise TrainingInterrupted(
            f"training interrupted by {name} at step {trainer.global_step}; saved {path}; continue with "
            f"resume_dir={self.run_dir} (or ckpt_path=last in this folder)",
            signum,
        )

    def _save_last(self, trainer: L.Trainer) -> str:
        ckpt = trainer.checkpoint_callback
        if isinstance(ckpt, SafeModelCheckpoint) and ckpt.save_last:
            return str(ckpt.save_last_now(trainer))
        if not parameters_finite(trainer, trainer.lightning_module):
            raise NonFiniteLossError(f"the weights are non-finite at step {trainer.global_step}; not saving")
        trainer.save_checkpoint(self.last_path)
        return str(self.last_path)


def _log_this_step(trainer: L.Trainer) -> None:
    """Send this step's logged metrics to the loggers now, as Lightning does right after the
    ``on_train_batch_end`` hooks (which the interrupt cuts short). Without it the step saved in
    ``last.ckpt`` is missing from ``metrics.csv`` and ``summary.json``: the resumed run starts at the
    next step, so its row would never be written."""
    connector = trainer._logger_connector
    connector.on_batch_end()
    connector.update_train_step_metrics()
