"""Test-only callbacks for the hardening tests (instantiated through ``+callbacks.<name>._target_``)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import lightning as L
import torch

from callbacks.preemption import GracefulInterrupt


class NaNGradAtStep(L.Callback):
    """Makes the gradients of the update at ``global_step == step`` NaN (a blown-up backward pass)."""

    def __init__(self, step: int):
        self.step = step

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == self.step:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.fill_(float("nan"))


class NaNWeightsAtStep(L.Callback):
    """Sets one weight to NaN at the end of the step that reaches ``global_step == step``, before the
    checkpoint callbacks run (they are ordered last)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class TouchAtStep(L.Callback):
    """Creates ``path`` once ``global_step >= step`` (so a test knows training is under way), then
    sleeps ``sleep`` seconds per step so a signal lands mid-run."""

    def __init__(self, step: int, path: str, sleep: float = 0.0):
        self.step, self.path, self.sleep = step, Path(path), sleep

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            self.path.touch()
            time.sleep(self.sleep)


class StepProgress(L.Callback):
    """Writes the number of finished optimizer steps to ``path`` at the start of every batch (so after
    the previous step's checkpoints). From ``slow_from`` finished steps on it pauses ``sleep`` seconds
    per step, and from ``stall_from`` on it waits (up to ``stall_s``) until a stop signal has arrived:
    a watcher can signal the run mid-training, and a late watcher still finds it running."""

    def __init__(
        self,
        path: str,
        sleep: float = 0.0,
        slow_from: int = 0,
        stall_from: int | None = None,
        stall_s: float = 120,
    ):
        self.path, self.sleep, self.slow_from = Path(path), sleep, slow_from
        self.stall_from, self.stall_s = stall_from, stall_s

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.path.write_text(str(trainer.global_step))
        if self.stall_from is not None and trainer.global_step >= self.stall_from:
            interrupts = [c for c in trainer.callbacks if isinstance(c, GracefulInterrupt)]
            deadline = time.monotonic() + self.stall_s
            while not any(c.received is not None for c in interrupts) and time.monotonic() < deadline:
                time.sleep(0.02)
        elif trainer.global_step >= self.slow_from:
            time.sleep(self.sleep)


class StallLastCheckpointSave(L.Callback):
    """At ``global_step == step``, the write of ``last.ckpt`` stalls halfway: half the bytes go into the
    temporary file, ``marker`` is created, and the process sleeps, so a test can ``kill -9`` it mid-save.
    (Runs before the checkpoint callbacks' own step-end hooks, which Lightning orders last.)"""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step != self.step:
            return
        real_save = torch.save

        def stalling_save(obj: object, f: object, *a: object, **k: object) -> None:
            if ".last.ckpt.tmp-" not in str(getattr(f, "name", f)):
                return real_save(obj, f, *a, **k)
            buffer = io.BytesIO()
            real_save(obj, buffer, *a, **k)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            self.marker.touch()
            time.sleep(120)  # killed here
            raise RuntimeError("StallLastCheckpointSave: the process was not killed")

        torch.save = stalling_save


class StallInPhase(L.Callback):
    """Stalls a run in one phase until the test has sent its signal, then counts how far it gets.

    ``phase``: ``fit_val`` (the validation inside fit, after ``step`` steps), ``after_fit_val`` (the
    validation after fit, ``validate_after_fit=true``) or ``export`` (inside the ``hf_model/`` export,
    once the weights are written). At the first batch of that phase (in the export: before the tokenizer
    is saved) it creates ``marker`` and waits until ``<marker>.go`` exists (the test creates it after
    sending the signal); each later validation batch that starts appends a line to ``<marker>.after``."""

    def __init__(self, phase: str, marker: str, step: int = 0, wait_s: float = 120):
        self.phase, self.marker, self.step, self.wait_s = phase, Path(marker), step, wait_s
        self.go = Path(f"{marker}.go")
        self.after = Path(f"{marker}.after")

    def _stall(self) -> None:
        self.marker.touch()
        deadline = time.monotonic() + self.wait_s
        while not self.go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def on_validation_batch_start(self, trainer: L.Trainer, *args: object, **kwargs: object) -> None:
        fitting = trainer.state.fn == "fit"
        phase = "fit_val" if fitting else "after_fit_val"
        if phase != self.phase or trainer.sanity_checking or (fitting and trainer.global_step < self.step):
            return
        if self.marker.exists():
            with self.after.open("a") as f:
                f.write(f"{trainer.global_step}\n")
        else:
            self._stall()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.phase != "export":
            return
        tokenizer = pl_module.tokenizer
        real_save = tokenizer.save_pretrained

        def stalled_save(*a: object, **k: object) -> object:
            self._stall()
            return real_save(*a, **k)

        tokenizer.save_pretrained = stalled_save


def run_train_script(args: list[str]) -> None:
    """``python train.py args`` in this process: the callable of a submitit job in the tests (pickled by
    reference, so the job process imports it from here)."""
    import runpy
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.argv = [str(root / "train.py"), *args]
    runpy.run_path(str(root / "train.py"), run_name="__main__")


class CrashAfterLastCheckpoint(L.Callback):
    """Raises right after ``last.ckpt`` of ``global_step == step`` is written, before Lightning logs that
    step's metrics row (what a ``kill -9`` landing there leaves). Runs before the checkpoint callbacks'
    own ``on_train_batch_end``, which Lightning orders last."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step != self.step:
            return
        for cb in trainer.checkpoint_callbacks:
            real = cb._save_last_checkpoint

            def save_then_crash(*a: object, _real=real, **k: object) -> None:  # noqa: ANN001
                _real(*a, **k)
                raise RuntimeError(f"simulated crash after last.ckpt of step {self.step}")

            cb._save_last_checkpoint = save_then_crash  # type: ignore[method-assign]
