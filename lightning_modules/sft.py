"""SFTModule: chat SFT (loss on assistant tokens) and the Parrot Ask model (loss on user tokens).

Which tokens carry loss is decided by the data (``ChatDataModule.loss_roles``); the module minimises
the masked causal-LM loss of ``algorithms/losses/sft.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import Perplexity

from algorithms.logprobs import labelled_logits
from algorithms.losses.sft import IGNORE_INDEX, masked_causal_lm_loss, selected_tokens_loss
from lightning_modules.causal_lm import CausalLMModule


class SFTModule(CausalLMModule):
    consumes: ClassVar[tuple[str, ...]] = ("tokens",)  # utils.batch_kinds

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.val_acc: MulticlassAccuracy | None = None  # needs the vocabulary size: built in configure_model

    def configure_model(self) -> None:
        super().configure_model()
        if self.val_acc is None:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            self.val_acc = MulticlassAccuracy(num_classes=vocab, average="micro", ignore_index=IGNORE_INDEX)

    def _step(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss, stats = masked_causal_lm_loss(logits, batch["labels"])
        return loss, logits, stats

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # The LM head runs on the counted positions only (the other role's turns cost no head compute).
        logits, targets, _ = labelled_logits(
            self.model, batch["input_ids"], batch["attention_mask"], batch["labels"]
        )
        loss, stats = selected_tokens_loss(logits, targets)
        bs = batch["input_ids"].size(0)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/ppl", torch.exp(loss.detach()), batch_size=bs)
        self.log("train/token_acc", stats["correct"].float() / stats["tokens"], batch_size=bs)
        self.log("train/tokens", stats["tokens"].float(), reduce_fx="sum", batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, logits, stats = self._step(batch)
        preds, target = logits[:, :-1].float(), batch["labels"][:, 1:]
        self.val_ppl.update(preds, target)
        self.val_acc.update(preds.argmax(-1).reshape(-1), target.reshape(-1))
        # Token-weighted mean loss across batches (and ranks, via sync_dist).
        self.log("val/loss", loss, prog_bar=True, batch_size=int(stats["tokens"]), sync_dist=True)
        self.log("val/ppl", self.val_ppl, batch_size=int(stats["tokens"]))
        self.log("val/token_acc", self.val_acc, batch_size=int(stats["tokens"]))
