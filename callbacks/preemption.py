"""GracefulInterrupt: SIGTERM, SIGUSR1 (SLURM's pre-emption warning) and SIGINT save ``last.ckpt`` at
the current step and stop the run with ``TrainingInterrupted`` (exit status 128 + signal), in every
phase: training, the validation inside fit, the validation after fit (``validate_after_fit``), and
test/predict.

The handler (``utils.stop_signals.StopSignals``, one per run, installed by ``train.py`` for the whole
run) only records the signal; the callback acts at the next batch end. In training that is the end of
the current optimizer step (where periodic checkpoints are taken), so ``resume_dir=<run>`` or
``ckpt_path=last`` continues exactly; in a validation pass it is the next validation batch, not the end
of the pass. Lightning's own SIGTERM handling is replaced at the start of each phase: it would end the
run with a ``SystemExit`` of status 0 and nothing saved. Under SLURM with auto-requeue (Lightning's
``SLURMEnvironment``), SIGTERM and the requeue signal stay with Lightning in each phase, which saves an
HPC checkpoint and requeues the job; only SIGINT is handled here. In a ``-m hydra/launcher=slurm`` sweep
job, submitit has installed its own handler on its signal (SIGUSR2) before Lightning's, and SLURM sends
that signal: the job's requeue signal is submitit's (``utils.launch_env.slurm_plugins``), and its
handler is set aside at the setup of each phase, so Lightning installs its own and sweep jobs requeue
like single jobs (between phases the run's ``StopSignals`` records it; the run puts submitit's back at
its end).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer.states import TrainerFn

from callbacks.checkpoint import SafeModelCheckpoint
from callbacks.nonfinite import agreed, parameters_finite
from utils.errors import NonFiniteLossError, TrainingInterrupted
from utils.stop_signals import STOP_SIGNALS, StopSignals

log = logging.getLogger(__name__)


def slurm_requeue_signal(trainer: L.Trainer) -> int | None:
    """The signal Lightning requeues on (SIGUSR1 by default) when it runs under SLURM with
    auto-requeue, else ``None``."""
    env = trainer._accelerator_connector.cluster_environment
    if isinstance(env, SLURMEnvironment) and env.auto_requeue:
        return int(env.requeue_signal or signal.SIGUSR1)
    return None


class GracefulInterrupt(L.Callback):
    """Turn a stop signal into a saved ``last.ckpt`` and a ``TrainingInterrupted`` at the next batch
    boundary of whatever phase runs. Without a ``SafeModelCheckpoint`` that saves ``last``, it writes
    ``<run_dir>/checkpoints/last.ckpt`` itself."""

    def __init__(self, run_dir: str | Path, signals: StopSignals | None = None):
        self.run_dir = Path(run_dir)
        self.last_path = self.run_dir / "checkpoints" / "last.ckpt"
        self.signals = signals if signals is not None else StopSignals()

    @property
    def received(self) -> int | None:
        return self.signals.received

    # ---- signal handlers --------------------------------------------------------------------
    def _signals(self, trainer: L.Trainer) -> list[int]:
        if slurm_requeue_signal(trainer) is not None:
            return [signal.SIGINT]  # Lightning saves and requeues on SIGUSR1/SIGTERM
        return list(STOP_SIGNALS)

    def _mine(self, trainer: L.Trainer) -> bool:
        """A signal this callback acts on arrived (on any rank: all ranks must agree)."""
        return agreed(trainer, self.received in self._signals(trainer))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        requeue = slurm_requeue_signal(trainer)
        if requeue is None:
            return
        self.signals.adopt(requeue)  # between phases a requeue signal stops the run like any other
        current = signal.getsignal(requeue)
        if current not in (None, signal.SIG_DFL) and not _is_lightnings(current):
            # Lightning installs its requeue handler only where there is none: make room for it.
            log.info(
                "SLURM auto-requeue: setting the %s handler %r aside for Lightning's",
                signal.Signals(requeue).name,
                current,
            )
            signal.signal(requeue, signal.SIG_DFL)

    def _take(self, trainer: L.Trainer) -> None:
        # Lightning registers its handlers just before each phase's loop: replace them here.
        if trainer.received_sigterm and self.received is None and signal.SIGTERM in self._signals(trainer):
            self.signals.received = signal.SIGTERM
        self.signals.take(self._signals(trainer))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning has put back the handlers it found: record signals again until the next phase.
        self.signals.take()

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take(trainer)
        if self._mine(trainer):  # before the first step of this run: nothing new to save
            self._stop(trainer, "before its first step", None)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take(trainer)

    # ---- the stops -------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._mine(trainer):
            return
        path = self._save_last(trainer)
        _log_this_step(trainer)
        self._stop(trainer, f"at step {trainer.global_step}", path)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not self._mine(trainer):
            return
        if trainer.state.fn != TrainerFn.FITTING:
            self._stop_after_fit(trainer, "the validation after fit")
        if trainer.sanity_checking:
            self._stop(trainer, "in the sanity check, before its first step", None)
        # Validation inside fit runs at a step boundary: save that step, as a training stop does.
        self._stop(trainer, f"in the validation at step {trainer.global_step}", self._save_last(trainer))

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._mine(trainer):
            self._stop_after_fit(trainer, "the test after fit")

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._mine(trainer):
            self._stop_after_fit(trainer, "the prediction after fit")

    def _stop(self, trainer: L.Trainer, when: str, saved: str | None) -> None:
        signum = self.received if self.received is not None else signal.SIGTERM  # another rank's signal
        what = f"saved {saved}; " if saved else ""
        raise TrainingInterrupted(
            f"training interrupted by {signal.Signals(signum).name} {when}; {what}continue with "
            f"resume_dir={self.run_dir} (or ckpt_path=last in this folder)",
            signum,
        )

    def _stop_after_fit(self, trainer: L.Trainer, phase: str) -> None:
        signum = self.received if self.received is not None else signal.SIGTERM
        raise TrainingInterrupted(after_fit_message(signum, phase, trainer.global_step, self.run_dir), signum)

    def _save_last(self, trainer: L.Trainer) -> str:
        return save_last(trainer, self.last_path)


def after_fit_message(signum: int, phase: str, step: int, run_dir: Path) -> str:
    """The error line of a stop signal that lands once training is over."""
    last = run_dir / "checkpoints" / "last.ckpt"
    held = f"{last} holds step {step}" if last.exists() else f"no checkpoint was saved at {last}"
    return (
        f"interrupted by {signal.Signals(signum).name} during {phase}, after training had finished "
        f"({held}); rerun what is missing with resume_dir={run_dir}"
    )


def save_last(trainer: L.Trainer, last_path: Path) -> str:
    """Write ``last.ckpt`` at the current step (through the ``SafeModelCheckpoint`` when there is one
    that saves ``last``; it skips a step already saved); return its path."""
    ckpt = trainer.checkpoint_callback
    if isinstance(ckpt, SafeModelCheckpoint) and ckpt.save_last:
        return str(ckpt.save_last_now(trainer))
    if not parameters_finite(trainer, trainer.lightning_module):
        raise NonFiniteLossError(f"the weights are non-finite at step {trainer.global_step}; not saving")
    trainer.save_checkpoint(last_path)
    return str(last_path)


def _is_lightnings(handler: Any) -> bool:
    return type(handler).__module__.startswith("lightning.")


def _log_this_step(trainer: L.Trainer) -> None:
    """Send this step's logged metrics to the loggers now, as Lightning does right after the
    ``on_train_batch_end`` hooks (which the interrupt cuts short). Without it the step saved in
    ``last.ckpt`` is missing from ``metrics.csv`` and ``summary.json``: the resumed run starts at the
    next step, so its row would never be written."""
    connector = trainer._logger_connector
    connector.on_batch_end()
    connector.update_train_step_metrics()


class PredictInterrupt(L.Callback):
    """The signal contract for an evaluation under ``trainer.predict`` (``eval.py``): a stop signal
    ends it at the next batch with ``TrainingInterrupted`` (one ``error:`` line, exit 128 + signal)
    instead of Lightning's default (run to the end and exit 0). Everything generated so far is in the
    sample cache, so the same command continues. Install ``signals`` around ``predict``."""

    def __init__(self, signals: StopSignals, rerun_hint: str):
        self.signals, self.rerun_hint = signals, rerun_hint

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signals.take()

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not agreed(trainer, self.signals.received is not None):
            return
        signum = self.signals.received if self.signals.received is not None else signal.SIGTERM
        done = trainer.predict_loop.batch_progress.current.processed  # this batch included
        raise TrainingInterrupted(
            f"evaluation interrupted by {signal.Signals(signum).name} after {done} batch(es); {self.rerun_hint}",
            signum,
        )
