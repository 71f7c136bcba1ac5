"""ReasoningEvalCallback: greedy CoT / Self-Consistency / Self-Agreement (arXiv 2311.08154) accuracy of
the model being trained, on a small question set, logged as ``val/reasoning/<method>/<metric>``.

The live model is wrapped in an :class:`~inference.backends.hf.HFBackend` (no sample cache: the
weights change between runs), so the numbers are what ``eval.py`` would report for the same questions
and settings on the exported model. Under DDP each rank evaluates a strided shard and the merged rows
give the metrics (every rank logs the same values); under FSDP every rank evaluates every question in
lockstep, since a sharded model needs all ranks in each forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from datamodules.reasoning import load_questions, shard
from evaluation.reasoning.evaluator import flat_metrics
from evaluation.reasoning.scoring import merge_results
from evaluation.reasoning.spec import ReasoningEvalSpec, SpecError
from lightning_modules.reasoning_predict import all_gather_objects
from utils.errors import ConfigError, QuartetError

log = logging.getLogger(__name__)


class ReasoningEvalCallback(L.Callback):
    """Evaluate after every ``every_n_val_runs``-th validation run and/or at the end of training.

    Args:
        path, split, fields, limit: the questions (see :func:`datamodules.reasoning.load_questions`);
            keep ``limit`` small: each question costs 1 (greedy) + m + 1 (Self-Agreement) generations.
        method: ``eval.py``'s ``method`` keys (``methods``, ``num_paths``, ``ks``, ``temperature``,
            ``max_new_tokens``, the agreement template...).
        prompt: ``eval.py``'s ``prompt`` keys; use the prompt settings the model is trained with.
        extraction_mode: ``strict``, ``flexible`` or ``auto``.
        every_n_val_runs: evaluate after every N-th validation run (sanity checks excluded); 0 = never.
        at_fit_end: evaluate once more when training ends, unless that step was just evaluated; the
            values go to the loggers and to ``summary.json``'s metrics.
        batch_size: prompts per forward pass.
        prefix: metric-name prefix.
    """

    def __init__(
        self,
        path: str,
        split: str = "test",
        fields: Mapping[str, str | None] | None = None,
        limit: int | None = 32,
        method: Mapping[str, Any] | None = None,
        prompt: Mapping[str, Any] | None = None,
        extraction_mode: str = "auto",
        every_n_val_runs: int = 1,
        at_fit_end: bool = True,
        batch_size: int = 16,
        prefix: str = "val/reasoning/",
    ) -> None:
        where = "callbacks.reasoning_eval"
        problems = []
        if not isinstance(every_n_val_runs, int) or every_n_val_runs < 0:
            problems.append(f"{where}.every_n_val_runs={every_n_val_runs} must be an integer >= 0")
        if not isinstance(batch_size, int) or batch_size < 1:
            problems.append(f"{where}.batch_size={batch_size} must be a positive integer")
        try:
            self.spec = ReasoningEvalSpec.from_config(
                dict(method or {"methods": ["greedy", "sa"]}),
                dict(prompt or {}),
                extraction_mode,
                where=(f"{where}.method", f"{where}.prompt"),
            )
        except SpecError as e:
            problems += e.problems
        if problems:
            raise ConfigError(problems)
        self.path, self.split, self.fields, self.limit = str(path), split, dict(fields or {}), limit
        self.every_n_val_runs, self.at_fit_end = every_n_val_runs, at_fit_end
        self.batch_size, self.prefix = batch_size, prefix
        self.records: list[Any] = []
        self.val_runs = 0
        self.last_step = -1
        self.last_metrics: dict[str, float] = {}
        self.last_results: dict[str, Any] | None = None

    # ---- state (so every_n_val_runs keeps counting across a resume) ----
    def state_dict(self) -> dict[str, Any]:
        return {"val_runs": self.val_runs, "last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.val_runs = int(state_dict.get("val_runs", 0))
        self.last_step = int(state_dict.get("last_step", -1))

    # ---- hooks ----
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.records:
            self.records = load_questions(self.path, self.split, fields=self.fields, limit=self.limit)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tokenizer = getattr(pl_module, "tokenizer", None)
        if getattr(pl_module, "model", None) is None or tokenizer is None:
            raise QuartetError(
                f"callbacks.reasoning_eval needs a module with .model and .tokenizer "
                f"({type(pl_module).__name__} has none)"
            )
        if self.spec.prompt.chat and not getattr(tokenizer, "chat_template", None):
            raise QuartetError(
                "callbacks.reasoning_eval.prompt.chat=true but the tokenizer has no chat template: set "
                "model.chat_template=... or callbacks.reasoning_eval.prompt.chat=false"
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_val_runs == 0:
            return
        self.val_runs += 1
        if self.val_runs % self.every_n_val_runs:
            return
        metrics = self.evaluate(trainer, pl_module)
        # Every rank holds the same merged values, so syncing them only silences Lightning's warning.
        pl_module.log_dict(metrics, batch_size=len(self.records), sync_dist=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.at_fit_end or trainer.interrupted or self.last_step == trainer.global_step:
            return
        metrics = self.evaluate(trainer, pl_module)
        # Lightning logs the metrics of optimizer step k at step index k - 1; so do we.
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=max(trainer.global_step - 1, 0))
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})

    # ---- the evaluation ----
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Evaluate the live model now; returns (and keeps in ``last_metrics``) the flat metrics."""
        from inference.backends.hf import HFBackend

        model = getattr(pl_module.model, "_orig_mod", pl_module.model)
        lockstep = getattr(pl_module, "_device_mesh", None) is not None  # FSDP: all ranks, all questions
        records = self.records if lockstep else shard(self.records, trainer.global_rank, trainer.world_size)
        backend = HFBackend(model, pl_module.tokenizer, batch_size=self.batch_size, model_id="live-model")
        part = self.spec.run(backend, records, cache=None, chunk_size=len(self.records)) if records else None
        parts = [part] if lockstep else all_gather_objects(part)
        results = merge_results(parts, order=[r.id for r in self.records])
        self.last_step = trainer.global_step
        self.last_metrics = flat_metrics(results, prefix=self.prefix)
        self.last_results = results
        return self.last_metrics
