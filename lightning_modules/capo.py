"""CaPOModule: context-aware preference optimization (Parrot, METHODS.md §1).

DPO-style training on pairs whose rejected answer was produced under a corrupted context, with every
log-prob taken under the true full context (the data's ``prompt_ids``). The objective is
``algorithms/losses/capo.py``; the reference model is handled by
``algorithms/reference.py`` (``copy`` | ``precomputed`` | ``adapter_off``).

Each step runs ONE policy forward over the concatenated [chosen; rejected] batch (2B rows), with the
LM head applied only to response positions, plus one no-grad reference forward in the live modes.
``module.shared_prompt`` (``auto`` by default) runs each pair's prompt once for both rows instead
(``algorithms/shared_prompt_logprobs.py``, docs/capo.md): the same log-probs, about 40% fewer token
FLOPs on prompt-heavy pairs; ``auto`` falls back to the plain forward, with one log line, where it
can't apply (packed batches, gradient checkpointing, a head that isn't a plain linear layer).

Logged metrics (TRL's names under a ``train/`` or ``val/`` prefix):
``{train,val}/loss``, ``…/rewards/chosen``, ``…/rewards/rejected``, ``…/rewards/margins``,
``…/rewards/accuracies``, ``…/logps/chosen``, ``…/logps/rejected``; per corruption type
``…/rewards/accuracies/<neg_type>`` (per epoch); ``train/sft_loss`` when ``sft_weight > 0``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, ClassVar

import torch

from algorithms import reference as ref_lib
from algorithms import shared_prompt_logprobs as shared_lib
from algorithms.logprobs import TokenLogprobs, masked_nll
from algorithms.losses.capo import LOSS_TYPES, capo_loss
from lightning_modules.causal_lm import CausalLMModule
from lightning_modules.components.precomputed_reference import PrecomputedReference
from utils.errors import ConfigError, QuartetError

log = logging.getLogger(__name__)

# The frozen reference copy is kept in eval mode on purpose; Lightning would warn about it every fit.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
CKPT_KEY = "capo_reference_logps"
TALLY_KEY = "capo_train_tally"  # the epoch's per-type accuracy so far: a mid-epoch resume continues it
LOGGED = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


class GroupTally:
    """Sums and counts of a per-pair value by group (neg_type), reduced across ranks on demand."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.sums = torch.zeros(len(self.names), dtype=torch.float64)
        self.counts = torch.zeros(len(self.names), dtype=torch.float64)

    def update(self, group_ids: torch.Tensor, values: torch.Tensor) -> None:
        ids = group_ids.detach().cpu()
        self.sums.index_add_(0, ids, values.detach().double().cpu())
        self.counts.index_add_(0, ids, torch.ones_like(ids, dtype=torch.float64))

    def compute_and_reset(self, reduce_sum: Any) -> dict[str, float]:
        both = reduce_sum(torch.stack([self.sums, self.counts]).float())
        sums, counts = both[0].cpu(), both[1].cpu()
        self.sums.zero_()
        self.counts.zero_()
        return {n: float(s / c) for n, s, c in zip(self.names, sums, counts) if c > 0}

    def state_dict(self, reduce_sum: Any) -> dict[str, Any]:
        """The sums and counts so far, over all ranks (every rank must call it: a collective)."""
        both = reduce_sum(torch.stack([self.sums, self.counts])).cpu()
        return {"names": list(self.names), "sums": both[0], "counts": both[1]}

    def load_state_dict(self, state: dict[str, Any], keep: bool) -> None:
        """Continue from saved totals (``keep``: on one rank only, so a later all-rank sum counts them
        once); a tally over other groups is ignored."""
        if list(state.get("names", [])) != self.names:
            return
        self.sums.copy_(state["sums"] if keep else torch.zeros_like(self.sums))
        self.counts.copy_(state["counts"] if keep else torch.zeros_like(self.counts))


SHARED_PROMPT_CHOICES = ("auto", True, False)


def shared_prompt_config_problems(choice: Any, model_cfg: dict[str, Any]) -> list[str]:
    """Start-up problems with ``module.shared_prompt`` (``auto`` | true | false) for a model config."""
    if choice not in SHARED_PROMPT_CHOICES or isinstance(choice, int) and not isinstance(choice, bool):
        return [f"module.shared_prompt={choice!r} must be auto, true or false"]
    if choice is True and (model_cfg or {}).get("gradient_checkpointing"):
        return [
            "module.shared_prompt=true needs model.gradient_checkpointing=false (transformers drops the KV "
            "cache under checkpointing); use shared_prompt=auto or false"
        ]
    return []


class CaPOModule(CausalLMModule):
    consumes: ClassVar[tuple[str, ...]] = ("preference",)  # utils.batch_kinds

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        fsdp_param_dtype: str | None = None,
        beta: float = 0.1,
        loss_type: str = "sigmoid",
        label_smoothing: float = 0.0,
        sft_weight: float = 0.0,
        reference: str = "copy",
        ipo_normalize_length: bool = True,
        precompute_batch_size: int | None = None,
        disable_dropout: bool = True,
        logprob_impl: str = "chunked",
        logprob_chunk_tokens: int | None = None,
        shared_prompt: str | bool = "auto",
    ):
        super().__init__(
            model, optimizer, scheduler, compile, fsdp_param_dtype, logprob_impl, logprob_chunk_tokens
        )
        problems = ref_lib.reference_config_problems(reference, self.model_cfg)
        if loss_type not in LOSS_TYPES:
            problems.append(f"module.loss_type={loss_type!r} must be one of {', '.join(LOSS_TYPES)}")
        if not float(beta) > 0:
            problems.append(f"module.beta={beta} must be > 0")
        if not 0.0 <= float(label_smoothing) < 0.5:
            problems.append(f"module.label_smoothing={label_smoothing} must be in [0, 0.5)")
        elif label_smoothing and loss_type != "sigmoid":
            problems.append(f"module.label_smoothing applies to loss_type=sigmoid only (got {loss_type})")
        if not float(sft_weight) >= 0:
            problems.append(f"module.sft_weight={sft_weight} must be >= 0")
        if precompute_batch_size is not None and (
            not isinstance(precompute_batch_size, int) or precompute_batch_size < 1
        ):
            problems.append(
                f"module.precompute_batch_size={precompute_batch_size} must be a positive integer"
            )
        problems += shared_prompt_config_problems(shared_prompt, self.model_cfg)
        if problems:
            raise ConfigError(problems)
        self.hparams.update(
            beta=float(beta),
            loss_type=loss_type,
            label_smoothing=float(label_smoothing),
            sft_weight=float(sft_weight),
            reference=reference,
            ipo_normalize_length=ipo_normalize_length,
            precompute_batch_size=precompute_batch_size,
            disable_dropout=disable_dropout,
            shared_prompt=shared_prompt,
        )
        self.shared_prompt = shared_prompt
        self._shared_off_reason: str | None = None  # auto: why it fell back (logged once)
        self._layout_memo: tuple[torch.Tensor, torch.Tensor, shared_lib.SharedPromptLayout] | None = None
        self.beta, self.loss_type, self.label_smoothing = float(beta), loss_type, float(label_smoothing)
        self.sft_weight, self.reference_mode = float(sft_weight), reference
        self.ipo_normalize_length = ipo_normalize_length
        self.precompute_batch_size = precompute_batch_size
        self.disable_dropout = disable_dropout
        self.ref_model: torch.nn.Module | None = None
        self.ref_fingerprint: str | None = None
        self.neg_types: list[str] = []
        self._tallies: dict[str, GroupTally] = {}
        self.precomputed = PrecomputedReference("capo", REF_COLUMNS, what="reference log-probs")

    # ---- model -------------------------------------------------------------------------------------
    def on_model_built(self) -> None:
        if self.disable_dropout:
            ref_lib.disable_dropout(self.model)
        if self.reference_mode == "adapter_off" and not ref_lib.is_peft_model(self.model):
            raise ConfigError(["module.reference=adapter_off needs a LoRA policy (model.lora.enabled=true)"])
        if self.reference_mode == "copy":
            self.ref_model = ref_lib.frozen_copy(self.model)
            if getattr(self, "_device_mesh", None) is not None:
                self._fully_shard(self.ref_model)
        elif self.reference_mode == "precomputed":
            self.ref_fingerprint = ref_lib.weights_fingerprint(self.model)

    def train(self, mode: bool = True) -> CaPOModule:
        super().train(mode)
        if self.ref_model is not None:
            self.ref_model.eval()  # the reference never trains (no dropout)
        return self

    # ---- log-probs and loss ------------------------------------------------------------------------
    def sequence_logps(
        self, model: torch.nn.Module, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed response log-probs [2B] and response token counts [2B] of a collated batch (padded or
        packed: the log-probs come back on the padded grid either way)."""
        scores = self._shared_scores(shared_lib.shared_prompt_logprobs, model, batch)
        if scores is None:
            scores = self.batch_logprobs(batch, model)
        return scores.logp.sum(-1), scores.mask.sum(-1)

    def _shared_scores(
        self, score: Any, model: torch.nn.Module, batch: dict[str, Any], **kwargs: Any
    ) -> TokenLogprobs | None:
        """``score`` (a shared-prompt log-prob function) of the batch, or None where the shared-prompt
        forward doesn't apply (``auto``; ``true`` raises)."""
        layout = self._shared_layout(model, batch)
        if layout is None:
            return None
        try:
            return score(
                model,
                batch,
                impl=self.logprob_impl,
                chunk_tokens=self.logprob_chunk_tokens,
                layout=layout,
                **kwargs,
            )
        except shared_lib.NotSharable as e:  # found mid-forward, e.g. a sliding-window cache
            self._shared_off(str(e))
            return None

    def _shared_off(self, problem: str) -> None:
        """``true``: stop with the reason; ``auto``: say once why the plain forward is used."""
        if self.shared_prompt is True:
            raise ConfigError([f"module.shared_prompt=true can't apply: {problem} (set it to auto or false)"])
        if problem != self._shared_off_reason:
            self._shared_off_reason = problem
            log.info("module.shared_prompt=auto: the plain forward instead, because %s", problem)

    def _shared_layout(
        self, model: torch.nn.Module, batch: dict[str, Any]
    ) -> shared_lib.SharedPromptLayout | None:
        """The batch's prompt/response split when it takes the shared-prompt forward under ``model``, else
        None: ``true`` raises where it can't apply, ``auto`` falls back to the plain forward and says why
        once. The split is kept for the batch's next call (the reference and the policy share it)."""
        if self.shared_prompt is False:
            return None
        problem = shared_lib.shared_prompt_problem(model, batch)
        layout = None
        if problem is None:
            memo = self._layout_memo
            if memo is not None and memo[0] is batch["input_ids"] and memo[1] is batch["labels"]:
                return memo[2]
            try:
                layout = shared_lib.split_pairs(batch)
            except shared_lib.NotSharable as e:
                problem = str(e)
        if layout is not None:
            self._layout_memo = (batch["input_ids"], batch["labels"], layout)
            return layout
        self._shared_off(str(problem))
        return None

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, Any]) -> torch.Tensor:
        """π_ref sequence log-probs [2B] (chosen rows, then rejected rows) in the configured mode."""
        if self.reference_mode == "precomputed":
            if REF_COLUMNS[0] not in batch:
                raise QuartetError(
                    "module.reference=precomputed but the batch has no reference log-probs: the pre-pass did "
                    "not run for this data (it runs at the start of fit)"
                )
            return torch.cat([batch[REF_COLUMNS[0]], batch[REF_COLUMNS[1]]]).float()
        copy = self.reference_mode == "copy"
        return self._frozen_sequence_logps(
            self.ref_model if copy else self.model, batch, adapter_off=not copy
        )

    def _frozen_sequence_logps(
        self, model: torch.nn.Module, batch: dict[str, Any], adapter_off: bool
    ) -> torch.Tensor:
        """Summed response log-probs [2B] under a frozen model (``ref_lib.frozen_batch_logprobs``, or its
        shared-prompt form)."""
        scores = self._shared_scores(
            shared_lib.frozen_shared_prompt_logprobs, model, batch, adapter_off=adapter_off
        )
        if scores is None:
            scores = ref_lib.frozen_batch_logprobs(
                model,
                batch,
                adapter_off=adapter_off,
                impl=self.logprob_impl,
                chunk_tokens=self.logprob_chunk_tokens,
            )
        return scores.logp.sum(-1)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The CaPO loss of one batch and its per-pair metrics (see ``capo_loss``)."""
        n = batch["neg_type"].shape[0]
        ref = self.reference_logps(batch)  # first: its activations are freed before the policy's
        logps, counts = self.sequence_logps(self.model, batch)
        ipo_lengths = self.loss_type == "ipo" and self.ipo_normalize_length
        loss, metrics = capo_loss(
            logps[:n],
            logps[n:],
            ref[:n],
            ref[n:],
            beta=self.beta,
            loss_type=self.loss_type,
            label_smoothing=self.label_smoothing,
            chosen_lengths=counts[:n] if ipo_lengths else None,
            rejected_lengths=counts[n:] if ipo_lengths else None,
        )
        if self.sft_weight > 0:
            sft = masked_nll(logps[:n], counts[:n])
            loss = loss + self.sft_weight * sft
            metrics["sft_loss"] = sft.detach()
        return loss, metrics

    # ---- steps -------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, metrics = self.compute_loss(batch)
        self._log_step("train", loss, metrics, batch)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, metrics = self.compute_loss(batch)
        self._log_step("val", loss, metrics, batch)

    def _log_step(
        self, split: str, loss: torch.Tensor, metrics: dict[str, torch.Tensor], batch: dict
    ) -> None:
        n = batch["neg_type"].shape[0]
        keys = [k for k in (*LOGGED, "sft_loss") if k in metrics]
        values = torch.stack([loss.detach(), *(metrics[k].mean() for k in keys)]).unbind()
        sync = split == "val"
        for key, value in zip(("loss", *keys), values):
            bar = key in ("loss", "rewards/accuracies")
            self.log(f"{split}/{key}", value, batch_size=n, prog_bar=bar, sync_dist=sync)
        if split in self._tallies:
            self._tallies[split].update(batch["neg_type"], metrics["rewards/accuracies"])

    def _log_by_type(self, split: str) -> None:
        tally = self._tallies.get(split)
        if tally is None:
            return
        for name, value in tally.compute_and_reset(self._reduce_sum).items():
            self.log(f"{split}/rewards/accuracies/{name}", value, sync_dist=False)

    def _reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum")

    def on_train_epoch_end(self) -> None:
        self._log_by_type("train")

    def on_validation_epoch_end(self) -> None:
        self._log_by_type("val")

    # ---- setup and the reference pre-pass ----------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        types = list(getattr(dm, "neg_types", []) or [])
        if types and types != self.neg_types:
            self.neg_types = types
            self._tallies = {s: GroupTally(types) for s in ("train", "val")}

    def on_fit_start(self) -> None:
        if self.reference_mode == "precomputed":
            from_scratch = not self.precomputed.from_checkpoint
            self._prepare_reference_columns(("train", "val"), allow_compute=from_scratch)

    def on_validation_start(self) -> None:
        if self.reference_mode == "precomputed" and self.trainer.state.fn != "fit":
            self._prepare_reference_columns(("val",), allow_compute=False)

    def on_train_start(self) -> None:
        if self.reference_mode == "precomputed":
            self.precomputed.require(self.trainer.datamodule, "train")

    def _reference_key(self, dm: Any, split: str) -> str:
        from datamodules.base import fingerprint

        return fingerprint(
            "capo-ref-v1",
            dm.keys[split],
            self.ref_fingerprint,
            self.model_cfg,
            str(self.trainer.precision),
            str(self.shared_prompt),  # the two forwards agree to float rounding, not bit for bit
        )

    def _prepare_reference_columns(self, splits: tuple[str, ...], allow_compute: bool) -> None:
        """Attach precomputed reference log-probs to the datamodule's splits (see
        :class:`PrecomputedReference`); the pre-pass scores with the still-initial policy."""
        dm = self.trainer.datamodule
        self.precomputed.prepare(
            self.trainer,
            splits,
            key_of=lambda split: self._reference_key(dm, split),
            score=self._score_reference if allow_compute else None,
            batch_size=self.precompute_batch_size,
            to_device=lambda b: self.transfer_batch_to_device(b, self.device, 0),
        )

    def _score_reference(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """π_ref sequence log-probs of one batch under the initial policy (adapter off for LoRA)."""
        n = batch["neg_type"].shape[0]
        logps = self._frozen_sequence_logps(self.model, batch, adapter_off=True)
        return {REF_COLUMNS[0]: logps[:n], REF_COLUMNS[1]: logps[n:]}

    # ---- checkpoints: the precomputed reference and the epoch's tally travel with them -----------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = self.precomputed.state_dict()
        if state is not None:
            checkpoint[CKPT_KEY] = state
        if "train" in self._tallies and self._trainer is not None:  # saves run on every rank
            checkpoint[TALLY_KEY] = self._tallies["train"].state_dict(self._reduce_sum)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if TALLY_KEY in checkpoint and "train" in self._tallies:
            keep = self._trainer is None or self.trainer.is_global_zero
            self._tallies["train"].load_state_dict(checkpoint[TALLY_KEY], keep=keep)
        self.precomputed.from_checkpoint = True
        saved = checkpoint.get(CKPT_KEY)
        if not saved or self.reference_mode != "precomputed":
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.precomputed.load_state_dict(saved, dm)
