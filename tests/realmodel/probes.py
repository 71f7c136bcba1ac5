"""A callback the real-model tests add from the config (``+callbacks.steps._target_=...StepRecorder``):
every optimizer step's training loss, and the trained module itself, reported through ``RECORDED``."""

from __future__ import annotations

import lightning as L
import torch

RECORDED: dict[str, object] = {}


class StepRecorder(L.Callback):
    def on_fit_start(self, trainer, pl_module) -> None:
        RECORDED["losses"] = []
        RECORDED["train_mode"] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        RECORDED["train_mode"].append(pl_module.model.training)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        RECORDED["losses"].append(float(torch.as_tensor(loss).detach()))

    def on_fit_end(self, trainer, pl_module) -> None:
        RECORDED["module"] = pl_module
