"""Callbacks that tests instantiate from the config (``+callbacks.probe._target_=tests.probes.X``) to
look inside a run; they report through :data:`RECORDED`, which the test reads after ``train(cfg)``."""

from __future__ import annotations

import lightning as L
import torch

RECORDED: dict[str, list] = {}


class ModeProbe(L.Callback):
    """Records, at each training batch, whether every submodule of the policy (and of the frozen
    reference, when there is one) is in train mode, and whether two forwards of the same batch differ
    (dropout at work). Instantiated from the config, so it reports through ``RECORDED``."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        RECORDED.setdefault("all_training", []).append(all(m.training for m in pl_module.model.modules()))
        ref = getattr(pl_module, "ref_model", None)
        if ref is not None:
            RECORDED.setdefault("ref_training", []).append(any(m.training for m in ref.modules()))
            return
        with torch.no_grad():
            a = pl_module(batch["input_ids"], batch["attention_mask"])
            b = pl_module(batch["input_ids"], batch["attention_mask"])
        RECORDED.setdefault("forwards_differ", []).append(not torch.equal(a, b))


class LayerCallCounter(L.Callback):
    """Counts the calls of the first decoder layer's MLP ``forward`` within each training step (forward
    plus backward). With gradient checkpointing, backward recomputes the layer and so calls it again.
    (Module hooks don't fire during the recomputation, so ``forward`` itself is wrapped.)"""

    def __init__(self) -> None:
        self._count = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        mlp = pl_module.model.model.layers[0].mlp
        inner = mlp.forward

        def counted(*args, **kwargs):
            self._count += 1
            return inner(*args, **kwargs)

        mlp.forward = counted

    def on_train_batch_start(self, *args) -> None:
        self._count = 0

    def on_train_batch_end(self, *args) -> None:
        RECORDED.setdefault("layer_calls", []).append(self._count)
