"""HFExport: write ``hf_model/`` (``save_pretrained`` model + tokenizer) at the end of training.

The folder is written beside its place and renamed into it (``write_hf_folder_atomic``), so a kill
mid-export leaves no partial ``hf_model/``. A stop signal during the export (``utils.stop_signals``)
drops it at once, makes sure ``last.ckpt`` holds the final step, and stops the run with
``TrainingInterrupted`` (one ``error:`` line, exit 128 + signal): the export can be redone from
``last.ckpt`` with ``scripts/consolidate_checkpoint.py``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L

from callbacks.preemption import save_last
from utils.errors import TrainingInterrupted
from utils.stop_signals import StopRequested, StopSignals


class HFExport(L.Callback):
    """On fit end, asks the module to export itself (all ranks take part; rank 0 writes)."""

    def __init__(self, out_dir: str | Path, signals: StopSignals | None = None):
        self.out_dir = Path(out_dir)
        self.signals = signals if signals is not None else StopSignals(())
        self.exported: Path | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.interrupted:
            return
        try:
            with self.signals.raising():
                self.exported = pl_module.export_hf(self.out_dir)
        except StopRequested as e:
            raise TrainingInterrupted(self._interrupted(trainer, e.signum), e.signum) from None

    def _interrupted(self, trainer: L.Trainer, signum: int) -> str:
        last = save_last(trainer, self.out_dir.parent / "checkpoints" / "last.ckpt")
        return (
            f"the {self.out_dir.name}/ export was interrupted by {signal.Signals(signum).name} (nothing "
            f"written there); training had finished and {last} holds step {trainer.global_step}; export "
            f"it with `python scripts/consolidate_checkpoint.py {last}` or resume_dir={self.out_dir.parent}"
        )
