"""SFTModule: chat SFT (loss on assistant tokens) and the Parrot Ask model (loss on user tokens).

Which tokens carry loss is decided by the data (``ChatDataModule.loss_roles``); the module minimises
the masked causal-LM loss L = −(1/N) Σ_{t: m_t=1} log p_θ(x_t | x_<t) (METHODS.md §1) over the token
log-probs of ``algorithms.logprobs.batch_token_logprobs``: padded or packed batches alike, the LM head
run only on the counted positions and chunk by chunk, so the full logits are never built.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torchmetrics import MeanMetric

from algorithms.logprobs import masked_nll
from algorithms.packing import batch_rows
from lightning_modules.causal_lm import CausalLMModule


class SFTModule(CausalLMModule):
    consumes: ClassVar[tuple[str, ...]] = ("tokens",)  # utils.batch_kinds

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Token-weighted means over the epoch (and ranks): val/ppl = exp(mean NLL), val/token_acc = hits / N.
        self.val_nll = MeanMetric()
        self.val_acc = MeanMetric()

    def _step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The masked NLL of a batch and ``{"tokens": N, "correct": #argmax hits}`` (detached)."""
        scores = self.batch_logprobs(batch)
        n = scores.mask.sum()
        if n == 0:
            raise ValueError("SFT: the batch has no token with a label (all labels are -100)")
        loss = masked_nll(scores.logp, scores.mask)
        return loss, {"tokens": n.detach(), "correct": scores.correct.sum()}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, stats = self._step(batch)
        bs = batch_rows(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/ppl", torch.exp(loss.detach()), batch_size=bs)
        self.log("train/token_acc", stats["correct"].float() / stats["tokens"], batch_size=bs)
        self.log("train/tokens", stats["tokens"].float(), reduce_fx="sum", batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, stats = self._step(batch)
        tokens = stats["tokens"].float()
        self.val_nll.update(loss.detach(), weight=tokens)
        self.val_acc.update(stats["correct"].float() / tokens, weight=tokens)
        # Token-weighted mean loss across batches (and ranks, via sync_dist).
        self.log("val/loss", loss, prog_bar=True, batch_size=int(stats["tokens"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.val_nll.update_count:
            self.log("val/ppl", torch.exp(self.val_nll.compute()))
            self.log("val/token_acc", self.val_acc.compute())
        self.val_nll.reset()
        self.val_acc.reset()
