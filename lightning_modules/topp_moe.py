"""TopPMoEModule: language-model training with Top-P (dynamic) MoE routing (METHODS.md §4,
arXiv 2403.07652).

Objective, with the aux losses averaged over the MoE layers (``algorithms/losses/moe.py``)::

    L = L_lm + alpha * L_b + beta * L_d (+ z * L_z)        alpha = 1e-2, beta = 1e-4, z = 0

``L_lm`` is the next-token cross entropy over the tokens whose label is not -100; ``L_b`` the balance
loss (f from the actual top-p dispatch), ``L_d`` the router entropy (dynamic loss), ``L_z`` the
optional router z-loss. The router tensors come back functionally in the model output
(``out.router_aux``), so activation checkpointing cannot count them twice, and padding
(``attention_mask == 0``) is left out of every aux loss and statistic.

A dense model (``model=tiny`` / ``model=hf``) runs through the same module with no aux term, which is
how ``dense_tiny`` is compared with the MoE runs on the same data and steps.

Logged metrics (``moe/...`` per training step, ``val/moe/...`` per validation epoch, reduced over all
validation batches and ranks):

- ``train/loss`` (the total objective), ``train/lm_loss``, ``train/ppl``; ``val/loss`` (LM loss only,
  so dense and MoE runs compare), ``val/ppl``;
- ``moe/experts_per_token`` (mean over tokens, then over layers), ``moe/activated_ratio_vs_top2``
  (= experts per token / 2: the activated expert parameters against Top-2), ``moe/balance_loss``,
  ``moe/dynamic_loss`` (mean router entropy), ``moe/aux_loss`` (the weighted sum), ``moe/z_loss``;
- per MoE layer i: ``moe/layer{i}/experts_per_token``, ``…/balance_loss``, ``…/router_entropy``,
  ``…/activated_ratio_vs_top2``, ``…/load_imbalance`` (max/mean tokens per expert) and, with
  ``log_histograms``, ``…/tokens_per_expert/e{j}`` (token count of expert j) and
  ``…/experts_hist/k{k}`` (share of tokens routed to exactly k experts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.text import Perplexity

from algorithms.losses.moe import balance_loss, moe_aux_loss, router_z_loss, routing_stats
from algorithms.losses.sft import IGNORE_INDEX, masked_causal_lm_loss
from lightning_modules.causal_lm import CausalLMModule
from models.moe_factory import MOE_KINDS, moe_config_problems
from utils.errors import ConfigError


@dataclass
class MoEStepOutput:
    """One forward pass: the objective and its parts (``aux`` is empty for a dense model)."""

    loss: Tensor
    lm_loss: Tensor
    aux_loss: Tensor
    logits: Tensor
    tokens: Tensor
    aux: list[Any] = field(default_factory=list)
    aux_metrics: dict[str, Tensor] = field(default_factory=dict)


def layer_metrics(aux_list: list[Any], prefix: str = "moe/", histograms: bool = True) -> dict[str, Tensor]:
    """Per-layer routing statistics of one batch (``routing_stats``), named ``{prefix}layer{i}/...``."""
    out: dict[str, Tensor] = {}
    for pos, aux in enumerate(aux_list):
        idx = aux.layer_idx if aux.layer_idx is not None else pos
        s = routing_stats(aux.router_probs, aux.dispatch_mask, aux.token_mask, aux.router_logits)
        name = f"{prefix}layer{idx}"
        out[f"{name}/router_entropy"] = s["router_entropy"]
        out[f"{name}/activated_ratio_vs_top2"] = s["activated_ratio_vs_top2"]
        out[f"{name}/load_imbalance"] = s["load_imbalance"]
        if histograms:
            hist = s["experts_per_token_hist"].float()
            share = hist / hist.sum().clamp_min(1.0)
            for k in range(1, hist.numel()):
                out[f"{name}/experts_hist/k{k}"] = share[k]
            for e, n in enumerate(s["tokens_per_expert"].float()):
                out[f"{name}/tokens_per_expert/e{e}"] = n
    return out


class RoutingStats(Metric):
    """Routing statistics summed over many batches (and ranks: every state reduces by sum).

    Per MoE layer: tokens, (token, expert) pairs per expert, the experts-per-token histogram, and the
    token-weighted sums of the router entropy, balance loss and z-loss. ``compute`` returns the same
    names as the per-step metrics (without a prefix).
    """

    full_state_update = False

    def __init__(self, layer_ids: list[int], num_experts: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.layer_ids = list(layer_ids)
        n, e = len(self.layer_ids), int(num_experts)
        self.add_state("tokens", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", torch.zeros(n, e, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hist", torch.zeros(n, e + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("entropy", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("balance", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("z", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, aux_list: list[Any]) -> None:
        for pos, aux in enumerate(aux_list):
            tm = aux.token_mask
            s = routing_stats(aux.router_probs, aux.dispatch_mask, tm, aux.router_logits)
            n = s["experts_per_token_hist"].sum().double()
            self.tokens[pos] += n
            self.pairs[pos] += s["tokens_per_expert"].double()
            self.hist[pos] += s["experts_per_token_hist"].double()
            self.entropy[pos] += s["router_entropy"].double() * n
            with torch.no_grad():
                self.balance[pos] += balance_loss(aux.router_probs, aux.dispatch_mask, tm).double() * n
                self.z[pos] += router_z_loss(aux.router_logits, tm).double() * n

    def compute(self, alpha: float = 1e-2, beta: float = 1e-4, z: float = 0.0) -> dict[str, Tensor]:
        tokens = self.tokens.clamp_min(1.0)
        k_mean = (self.hist * torch.arange(self.hist.shape[1], device=self.hist.device)).sum(1) / tokens
        entropy, bal, zl = self.entropy / tokens, self.balance / tokens, self.z / tokens
        out: dict[str, Tensor] = {}
        for pos, idx in enumerate(self.layer_ids):
            name = f"layer{idx}"
            out[f"{name}/experts_per_token"] = k_mean[pos]
            out[f"{name}/balance_loss"] = bal[pos]
            out[f"{name}/router_entropy"] = entropy[pos]
            out[f"{name}/activated_ratio_vs_top2"] = k_mean[pos] / 2.0
            pairs = self.pairs[pos]
            out[f"{name}/load_imbalance"] = pairs.max() / pairs.mean().clamp_min(1e-9)
            share = self.hist[pos] / tokens[pos]
            for k in range(1, share.numel()):
                out[f"{name}/experts_hist/k{k}"] = share[k]
            for e, cnt in enumerate(pairs):
                out[f"{name}/tokens_per_expert/e{e}"] = cnt
        out["experts_per_token"] = k_mean.mean()
        out["activated_ratio_vs_top2"] = k_mean.mean() / 2.0
        out["balance_loss"] = bal.mean()
        out["dynamic_loss"] = entropy.mean()
        aux = alpha * bal.mean() + beta * entropy.mean()
        if z:
            out["z_loss"] = zl.mean()
            aux = aux + z * zl.mean()
        out["aux_loss"] = aux
        return {k: v.float() for k, v in out.items()}


class TopPMoEModule(CausalLMModule):
    """LM training of a Top-P / top-k MoE (or, for comparison, a dense) causal LM.

    Args (beyond :class:`CausalLMModule`'s):
        balance_coef: alpha, weight of the balance loss (paper: 1e-2).
        dynamic_coef: beta, weight of the dynamic (router-entropy) loss (paper: 1e-4).
        z_loss_coef: weight of the router z-loss (ST-MoE); 0 = off, as in the paper.
        log_histograms: also log, per layer and step, tokens per expert and the experts-per-token
            histogram (2N scalars per layer).
    """

    consumes: ClassVar[tuple[str, ...]] = ("tokens",)  # utils.batch_kinds

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        fsdp_param_dtype: str | None = None,
        balance_coef: float = 1e-2,
        dynamic_coef: float = 1e-4,
        z_loss_coef: float = 0.0,
        log_histograms: bool = True,
    ):
        super().__init__(model, optimizer, scheduler, compile, fsdp_param_dtype)
        problems = moe_config_problems(self.model_cfg) if self.model_cfg.get("kind") in MOE_KINDS else []
        for name, value in (
            ("balance_coef", balance_coef),
            ("dynamic_coef", dynamic_coef),
            ("z_loss_coef", z_loss_coef),
        ):
            if not float(value) >= 0:
                problems.append(f"module.{name}={value} must be >= 0")
        if problems:
            raise ConfigError(problems)
        self.alpha, self.beta, self.z_coef = float(balance_coef), float(dynamic_coef), float(z_loss_coef)
        self.log_histograms = bool(log_histograms)
        self.hparams.update(
            balance_coef=self.alpha,
            dynamic_coef=self.beta,
            z_loss_coef=self.z_coef,
            log_histograms=self.log_histograms,
        )
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.val_routing: RoutingStats | None = None  # needs the MoE layout: built in configure_model

    # ---- model -------------------------------------------------------------------------------
    def on_model_built(self) -> None:
        super().on_model_built()
        config = getattr(self.model, "config", None)
        if getattr(config, "model_type", None) == "quartet_topp_moe":
            # The exported config records the coefficients the model was trained with.
            config.router_aux_loss_coef = self.alpha
            config.router_dynamic_loss_coef = self.beta
            config.router_z_loss_coef = self.z_coef

    def configure_model(self) -> None:
        super().configure_model()
        if self.val_routing is None:
            layout = self.moe_layout()
            if layout is not None:
                self.val_routing = RoutingStats(*layout)

    def moe_layout(self) -> tuple[list[int], int] | None:
        """``(MoE layer indices, experts per layer)``, or None for a dense model."""
        model = getattr(self.model, "_orig_mod", self.model)
        config = getattr(model, "config", None)
        if getattr(config, "model_type", None) != "quartet_topp_moe":
            return None
        return list(config.moe_layer_indices), int(config.num_experts)

    # ---- the objective ------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, Tensor], prefix: str = "moe/") -> MoEStepOutput:
        """Forward ``batch`` and return ``L_lm + alpha L_b + beta L_d (+ z L_z)`` with its parts."""
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
        )
        lm_loss, stats = masked_causal_lm_loss(out.logits, batch["labels"])
        aux = list(getattr(out, "router_aux", None) or [])
        if aux:
            aux_loss, aux_metrics = moe_aux_loss(aux, self.alpha, self.beta, self.z_coef, prefix=prefix)
        else:
            aux_loss, aux_metrics = lm_loss.new_zeros(()), {}
        return MoEStepOutput(
            loss=lm_loss + aux_loss,
            lm_loss=lm_loss,
            aux_loss=aux_loss,
            logits=out.logits,
            tokens=stats["tokens"],
            aux=aux,
            aux_metrics=aux_metrics,
        )

    def train_metrics(self, step: MoEStepOutput) -> dict[str, Tensor]:
        """The per-step metrics logged by ``training_step`` (all detached)."""
        metrics = {
            "train/loss": step.loss.detach(),
            "train/lm_loss": step.lm_loss.detach(),
            "train/ppl": torch.exp(step.lm_loss.detach()),
        }
        metrics.update(step.aux_metrics)
        if step.aux:
            metrics.update(layer_metrics(step.aux, "moe/", self.log_histograms))
        return metrics

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        step = self.compute_loss(batch)
        metrics = self.train_metrics(step)
        bs = batch["input_ids"].size(0)
        self.log("train/loss", metrics.pop("train/loss"), prog_bar=True, batch_size=bs)
        if "moe/experts_per_token" in metrics:
            self.log(
                "moe/experts_per_token", metrics.pop("moe/experts_per_token"), prog_bar=True, batch_size=bs
            )
        self.log_dict(metrics, batch_size=bs)
        return step.loss

    # ---- validation -----------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        step = self.compute_loss(batch, prefix="val/moe/")
        preds, target = step.logits[:, :-1].float(), batch["labels"][:, 1:]
        self.val_ppl.update(preds, target)
        tokens = int(step.tokens)
        # Token-weighted mean LM loss over batches (and ranks, via sync_dist): comparable across
        # dense and MoE models. The aux terms go to val/moe/aux_loss.
        self.log("val/loss", step.lm_loss, prog_bar=True, batch_size=tokens, sync_dist=True)
        self.log("val/ppl", self.val_ppl, batch_size=tokens)
        if step.aux and self.val_routing is not None:
            self.val_routing.update(step.aux)

    def on_validation_epoch_end(self) -> None:
        if self.val_routing is None or not self.val_routing.update_called:
            return
        values = self.val_routing.compute(self.alpha, self.beta, self.z_coef)
        self.val_routing.reset()
        if not self.log_histograms:
            values = {
                k: v
                for k, v in values.items()
                if "/experts_hist/" not in k and "/tokens_per_expert/" not in k
            }
        # compute() already reduced the sums over ranks.
        self.log_dict({f"val/moe/{k}": v for k, v in values.items()}, sync_dist=False)
