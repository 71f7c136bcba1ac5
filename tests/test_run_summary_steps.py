"""``summary.json``'s ``steps_this_run`` counts optimiser steps, also when one batch takes several (online
RL's μ inner passes), and a resumed run counts only its own; the loss curve keeps one point per batch
that stepped."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from callbacks.run_summary import RunSummary


def _batch(cb: RunSummary, trainer: SimpleNamespace, steps: int, loss: float) -> None:
    cb.on_train_batch_start(trainer, None, None, 0)
    trainer.global_step += steps
    cb.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)


def test_steps_this_run_counts_optimiser_steps_not_batches():
    trainer = SimpleNamespace(global_step=0)
    cb = RunSummary()
    for loss in (3.0, 2.0):
        _batch(cb, trainer, 2, loss)  # μ = 2: two optimiser steps per batch
    _batch(cb, trainer, 0, 9.0)  # an accumulation micro-batch: no step, no loss point
    assert cb.summary()["steps_this_run"] == 4 and cb.summary()["steps_recorded"] == 2
    assert cb.summary()["last_step_loss"] == 2.0

    resumed = RunSummary()
    resumed.load_state_dict(cb.state_dict())  # the curve continues; the count starts again
    _batch(resumed, trainer, 2, 1.0)
    assert resumed.summary()["steps_this_run"] == 2 and resumed.summary()["steps_recorded"] == 3
    assert resumed.summary()["first_step_loss"] == 3.0
