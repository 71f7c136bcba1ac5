"""OnlineRLModule: GRPO, RLOO and PPO with the generation inside the training step (issue #18).

Each training step (one batch of B prompts with their records, ``datamodules/reasoning_prompts.py``):

1. **generate** G completions per prompt from the *current* policy: no grad, eval mode, through
   Quartet's batched decoder (``inference/decoding.generate_token_ids``: one prefill per prompt whose
   KV cache the G samples share, finished rows dropped). A group is exactly "G samples of one prompt";
2. **score** them (``algorithms/rewards.score_completions``: ``reward=`` answer_match, format, grm,
   weighted);
3. **advantages** (``algorithms/advantages.py``): ``advantage=grpo`` (group mean/std; ``scale_rewards=false``
   is Dr. GRPO), ``rloo`` (leave-one-out), ``ppo`` (a value head on the policy's last hidden state and
   GAE over per-token rewards: the sequence reward on the last token minus β·(log π − log π_ref) on
   every token, as InstructGPT/TRL's PPO put the KL in the reward);
4. **μ inner passes** (``inner_steps``), each one optimiser step, of the clipped surrogate
   (``algorithms/losses/policy_gradient.py``) with, for GRPO/RLOO, the k3 KL to the frozen reference
   (``algorithms/reference.py``: ``reference=copy`` or ``adapter_off``) in the loss.

Manual optimisation (μ optimiser steps per batch; ``trainer.global_step`` counts optimiser steps), so
``trainer.gradient_clip_val`` must be null and ``max_grad_norm`` clips instead.

The sampling RNG is a counter-based stream: completion j of a prompt in rollout k is drawn from a
generator seeded by ``(seed, prompt id, k)``; the counter k is saved in every checkpoint, so a resume
(after ``kill -9`` too) draws the same completions as the uninterrupted run, on any number of ranks.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import torch

from algorithms import reference as ref_lib
from algorithms.advantages import (
    ESTIMATORS,
    gae,
    grpo_advantages,
    rloo_advantages,
    whiten,
    zero_advantage_groups,
)
from algorithms.logprobs import model_token_logprobs, token_logprobs
from algorithms.losses.policy_gradient import AGGREGATIONS, clipped_surrogate_loss, clipped_value_loss
from algorithms.rewards import needs_gold, reward_problems, score_completions
from algorithms.rollouts import RolloutTensors, last_token_rewards, rollout_tensors
from algorithms.shared_prefix import NotSharable, can_share_prefix, shared_prefix_logprobs
from inference.decoding import generate_token_ids
from inference.sampling import SamplingParams
from lightning_modules.causal_lm import CausalLMModule, as_dict
from lightning_modules.online_rl_parts import eos_and_pad, generation_ready, value_head_for
from utils.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "online_rl"
PPO_DEFAULTS = {"gamma": 1.0, "lam": 0.95, "value_coef": 0.1, "value_clip": 0.2, "whiten": True}


def config_problems(kw: dict[str, Any]) -> list[str]:
    """Every problem of the module's settings (see ``conf/module/online_rl.yaml``)."""
    p = []
    if kw["advantage"] not in ESTIMATORS:
        p.append(f"module.advantage={kw['advantage']!r} must be one of {', '.join(ESTIMATORS)}")
    g = kw["num_generations"]
    if not isinstance(g, int) or g < 1 or (g < 2 and kw["advantage"] != "ppo"):
        p.append(f"module.num_generations={g} must be an integer >= 2 for grpo/rloo (a group), >= 1 for ppo")
    if not isinstance(kw["inner_steps"], int) or kw["inner_steps"] < 1:
        p.append(f"module.inner_steps={kw['inner_steps']} must be an integer >= 1 (μ)")
    if kw["aggregation"] not in AGGREGATIONS:
        p.append(f"module.aggregation={kw['aggregation']!r} must be one of {', '.join(AGGREGATIONS)}")
    if not float(kw["beta"]) >= 0 or not float(kw["epsilon"]) > 0:
        p.append("module.beta must be >= 0 and module.epsilon > 0")
    if kw["reference"] not in ("copy", "adapter_off"):
        p.append(
            f"module.reference={kw['reference']!r} must be copy or adapter_off (online RL scores fresh samples)"
        )
    reward = kw["reward"] or {}
    p += reward_problems(reward.get("weights") or {}, reward.get("extraction_mode", "auto"))
    if needs_gold(reward.get("weights") or {}) and not reward.get("needs_gold", True):
        p.append("reward.needs_gold must be true: answer_match and grm read the gold answer")
    try:
        SamplingParams(**{**kw["sampling"], "n": 1})
    except (TypeError, ValueError) as e:
        p.append(f"module.sampling: {e}")
    if float(kw["sampling"].get("temperature", 1.0)) <= 0:
        p.append("module.sampling.temperature must be > 0: a group of greedy completions has no spread")
    return p


class OnlineRLModule(CausalLMModule):
    consumes = ("reasoning_prompts",)  # utils/batch_kinds.py

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        fsdp_param_dtype: str | None = None,
        reward: dict[str, Any] | None = None,
        advantage: str = "grpo",
        num_generations: int = 8,
        inner_steps: int = 1,
        sampling: dict[str, Any] | None = None,
        seed: int = 0,
        beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        scale_rewards: bool = True,
        aggregation: str = "sequence",
        reference: str = "copy",
        max_grad_norm: float | None = 1.0,
        ppo: dict[str, Any] | None = None,
        disable_dropout: bool = True,
        shared_prefix: bool = True,
    ):
        super().__init__(model, optimizer, scheduler, compile, fsdp_param_dtype)
        kw = dict(
            reward=as_dict(reward) or {"weights": {"answer_match": 1.0}},
            advantage=advantage,
            num_generations=num_generations,
            inner_steps=inner_steps,
            sampling={"temperature": 1.0, "max_new_tokens": 256, **(as_dict(sampling) or {})},
            seed=int(seed),
            beta=float(beta),
            epsilon=float(epsilon),
            epsilon_high=None if epsilon_high is None else float(epsilon_high),
            scale_rewards=bool(scale_rewards),
            aggregation=aggregation,
            reference=reference,
            max_grad_norm=None if max_grad_norm is None else float(max_grad_norm),
            ppo={**PPO_DEFAULTS, **(as_dict(ppo) or {})},
            disable_dropout=disable_dropout,
            shared_prefix=bool(shared_prefix),
        )
        problems = config_problems(kw)
        if problems:
            raise ConfigError(problems)
        self.hparams.update(kw)
        self.cfg = kw
        self.automatic_optimization = False
        self.ref_model: torch.nn.Module | None = None
        self.value_head: torch.nn.Module | None = None
        self.rollouts_done = 0  # the sampling RNG's counter (checkpointed)

    # ---- model -------------------------------------------------------------------------------------
    def on_model_built(self) -> None:
        if self.cfg["disable_dropout"]:  # π_old, π_θ and π_ref must score tokens deterministically
            ref_lib.disable_dropout(self.model)
        if self.cfg["reference"] == "adapter_off" and not ref_lib.is_peft_model(self.model):
            raise ConfigError(["module.reference=adapter_off needs a LoRA policy (model.lora.enabled=true)"])
        mesh = getattr(self, "_device_mesh", None)
        if self.cfg["reference"] == "copy" and self.cfg["beta"] > 0:
            self.ref_model = ref_lib.frozen_copy(self.model)
            if mesh is not None:
                self._fully_shard(self.ref_model)
        if self.cfg["advantage"] == "ppo":
            self.value_head = value_head_for(self.model, mesh)

    def train(self, mode: bool = True) -> OnlineRLModule:
        super().train(mode)
        if self.ref_model is not None:
            self.ref_model.eval()
        return self

    def configure_optimizers(self) -> dict[str, Any]:
        """The policy's optimiser and schedule; PPO's value head trains in the same optimiser."""
        from hydra.utils import instantiate

        from lightning_modules.components.optim import build_optimizer_and_scheduler

        params: torch.nn.Module = self.model
        if self.value_head is not None:
            params = torch.nn.ModuleDict({"policy": self.model, "value_head": self.value_head})
        factory = instantiate(self.optimizer_cfg, _partial_=True)
        return build_optimizer_and_scheduler(params, factory, self.scheduler_cfg, self.total_training_steps())

    def total_training_steps(self) -> int:
        """Optimiser steps: μ per batch (``max_steps`` already counts optimiser steps)."""
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return int(self.trainer.max_steps)
        return super().total_training_steps() * self.cfg["inner_steps"]

    # ---- 1. generation -----------------------------------------------------------------------------
    def generate(
        self, batch: dict[str, Any], n: int, greedy: bool = False
    ) -> tuple[list[list[int]], list[list[list[int]]], int]:
        """``(prompts, completions[i][j] ids with EOS, generated tokens)`` from the current policy."""
        prompts = [ids[m.bool()].tolist() for ids, m in zip(batch["prompt_ids"], batch["prompt_mask"])]
        sampling = {**self.cfg["sampling"], "n": n, "seed": self.cfg["seed"]}
        if greedy:
            sampling["temperature"] = 0.0
        params = SamplingParams(**sampling)
        keys = [f"{rec.id}\x00rollout {self.rollouts_done}" for rec in batch["records"]]
        eos_ids, pad_id = eos_and_pad(self.model, self.tokenizer)
        with generation_ready(self.model):
            seqs = generate_token_ids(
                self.model, prompts, params, eos_token_ids=eos_ids, pad_token_id=pad_id, seed_keys=keys
            )
        completions = [
            [s.token_ids + ([s.eos_token_id] if s.eos_token_id is not None else []) for s in g] for g in seqs
        ]
        return prompts, completions, sum(s.num_tokens for g in seqs for s in g)

    # ---- 2./3. scores and advantages ---------------------------------------------------------------
    def policy_logps(
        self, t: RolloutTensors, with_values: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(logp [N, T-1], mask, values [N, T-1] or None)`` under the current policy (with grad)."""
        shared = self.prefix_grid(self.model, t) if not with_values else None
        if shared is not None:
            return shared, t.labels[:, 1:].ne(-100), None
        if not with_values:
            logp, mask = model_token_logprobs(self.model, t.input_ids, t.attention_mask, t.labels)
            return logp, mask, None
        out = self.model(
            input_ids=t.input_ids, attention_mask=t.attention_mask, output_hidden_states=True, use_cache=False
        )
        logp, mask = token_logprobs(out.logits, t.labels)
        values = self.value_head(out.hidden_states[-1].float()).squeeze(-1)[:, :-1]
        return logp, mask, values * mask

    def reference_logps(self, t: RolloutTensors) -> torch.Tensor | None:
        if self.cfg["beta"] <= 0:
            return None
        model = self.ref_model if self.ref_model is not None else self.model
        adapter_off = self.ref_model is None
        off = ref_lib.adapter_disabled(model) if adapter_off else contextlib.nullcontext()
        with torch.no_grad(), off, ref_lib.eval_mode(model):
            shared = self.prefix_grid(model, t)
        if shared is not None:
            return shared
        return ref_lib.frozen_token_logprobs(
            model, t.input_ids, t.attention_mask, t.labels, adapter_off=adapter_off
        )[0]

    @staticmethod
    def prefix_grid(model: torch.nn.Module, t: RolloutTensors) -> torch.Tensor | None:
        """:func:`~algorithms.shared_prefix.shared_prefix_logprobs` (each prompt run once for its G
        completions) put on the ``[N, T-1]`` grid of ``t``'s padded rows, as ``model_token_logprobs``
        returns it; None where the shared prefix doesn't apply (:func:`can_share_prefix`, or a cache
        refused mid-forward, e.g. a sliding window: remembered, so later batches skip straight to None)
        and the caller scores the padded rows."""
        if not can_share_prefix(model, t.prefix):
            return None
        assert t.prefix is not None
        try:
            logp = shared_prefix_logprobs(model, t.prefix)
        except NotSharable as e:
            log.info("module.shared_prefix: the padded rows instead, because %s", e)
            return None
        mask = t.labels[:, 1:].ne(-100)
        return torch.zeros(mask.shape, dtype=logp.dtype, device=logp.device).masked_scatter(
            mask, logp[t.prefix.completion_mask.bool()]
        )

    def advantages(
        self,
        rewards: torch.Tensor,
        t: RolloutTensors,
        mask: torch.Tensor,
        logp: torch.Tensor,
        ref: torch.Tensor | None,
        values: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(advantages [N] or [N, T-1], returns or None)``."""
        g = self.cfg["num_generations"]
        if self.cfg["advantage"] == "grpo":
            return grpo_advantages(rewards.view(-1, g), scale_std=self.cfg["scale_rewards"]).view(-1), None
        if self.cfg["advantage"] == "rloo":
            return rloo_advantages(rewards.view(-1, g)).view(-1), None
        ppo = self.cfg["ppo"]
        token_rewards = last_token_rewards(rewards, mask)
        if ref is not None:  # the KL penalty as a per-token reward (k1), as in InstructGPT
            token_rewards = token_rewards - self.cfg["beta"] * (logp.detach() - ref) * mask
        adv, returns = gae(token_rewards, values, mask, ppo["gamma"], ppo["lam"])
        return (whiten(adv, mask) if ppo["whiten"] else adv), returns

    # ---- 4. the μ inner passes ---------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        start = time.perf_counter()
        prompts, completions, gen_tokens = self.generate(batch, self.cfg["num_generations"])
        self.rollouts_done += 1
        gen_s = time.perf_counter() - start
        records = [rec for rec in batch["records"] for _ in range(self.cfg["num_generations"])]
        texts = self.tokenizer.batch_decode(
            [c for group in completions for c in group], skip_special_tokens=True
        )
        rewards, parts = score_completions(
            texts, records, self.cfg["reward"]["weights"], self.cfg["reward"].get("extraction_mode", "auto")
        )
        start = time.perf_counter()
        share = self.cfg["shared_prefix"] and self.cfg["advantage"] != "ppo"  # PPO's values: all positions
        pad = eos_and_pad(self.model, self.tokenizer)[1]
        t = rollout_tensors(prompts, completions, pad, with_prefix=share).to(self.device)
        loss, metrics = self.optimise(t, rewards.to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - start
        metrics.update(self.rollout_metrics(rewards, parts, t))
        metrics["gen_tokens_per_s"] = torch.tensor(gen_tokens / max(gen_s, 1e-9))
        metrics["train_tokens_per_s"] = torch.tensor(
            t.num_tokens * self.cfg["inner_steps"] / max(train_s, 1e-9)
        )
        self.log_metrics("train", loss, metrics, len(prompts))
        self.step_tokens = gen_tokens + t.num_tokens * self.cfg["inner_steps"]  # callbacks/throughput.py
        return loss

    def optimise(
        self, t: RolloutTensors, rewards: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Old/reference log-probs and advantages once, then μ optimiser steps on the same rollouts."""
        ppo, mu = self.cfg["advantage"] == "ppo", self.cfg["inner_steps"]
        ref = self.reference_logps(t)
        old_logp = old_values = None
        if mu > 1 or ppo:
            with torch.no_grad(), ref_lib.eval_mode(self.model):
                old_logp, mask, old_values = self.policy_logps(t, ppo)
        else:
            mask = t.labels[:, 1:].ne(-100)
        adv, returns = self.advantages(rewards, t, mask, old_logp, ref, old_values)
        opt, sched = self.optimizers(), self.lr_schedulers()
        for _ in range(mu):
            logp, mask, values = self.policy_logps(t, ppo)
            old = logp.detach() if old_logp is None else old_logp  # μ = 1: ratio 1, as TRL
            loss, metrics = clipped_surrogate_loss(
                logp, old, adv, mask, ref_logps=None if ppo else ref, beta=0.0 if ppo else self.cfg["beta"],
                epsilon=self.cfg["epsilon"], epsilon_high=self.cfg["epsilon_high"],
                aggregation=self.cfg["aggregation"], max_tokens=self.cfg["sampling"]["max_new_tokens"],
            )  # fmt: skip
            if ppo:
                vloss, vm = clipped_value_loss(
                    values, old_values, returns, mask, self.cfg["ppo"]["value_clip"]
                )
                loss = loss + self.cfg["ppo"]["value_coef"] * vloss
                metrics.update(value_loss=vloss.detach(), **vm)
                if ref is not None:
                    metrics["kl"] = ((ref - logp.detach()).exp() - (ref - logp.detach()) - 1)[mask].mean()
            self.optimizer_step_on(loss, opt, sched)
        return loss.detach(), metrics

    def optimizer_step_on(self, loss: torch.Tensor, opt: Any, sched: Any) -> None:
        """One manual optimisation step: backward, clip to ``max_grad_norm`` (when set), step, schedule."""
        opt.zero_grad()
        self.manual_backward(loss)
        if self.cfg["max_grad_norm"]:
            self.clip_gradients(
                opt, gradient_clip_val=self.cfg["max_grad_norm"], gradient_clip_algorithm="norm"
            )
        opt.step()
        if sched is not None:
            sched.step()

    def rollout_metrics(
        self, rewards: torch.Tensor, parts: dict[str, torch.Tensor], t: RolloutTensors
    ) -> dict[str, torch.Tensor]:
        g = self.cfg["num_generations"]
        out = {
            "reward_mean": rewards.mean(),
            "reward_std": rewards.std() if rewards.numel() > 1 else torch.tensor(0.0),
            "completion_len": t.completion_lengths.float().mean(),
        }
        if g > 1:  # groups whose completions all got one reward: zero advantage (PPO has no groups)
            out["zero_adv_frac"] = zero_advantage_groups(rewards.view(-1, g)).float().mean()
        out.update({f"reward_{k}": v.mean() for k, v in parts.items()})
        return out

    def log_metrics(
        self, split: str, loss: torch.Tensor | None, metrics: dict[str, torch.Tensor], n: int
    ) -> None:
        sync = split == "val"
        if loss is not None:
            self.log(f"{split}/loss", loss, batch_size=n, prog_bar=True, sync_dist=sync)
        for key, value in metrics.items():
            self.log(f"{split}/{key}", value.float().to(self.device), batch_size=n, sync_dist=sync)

    # ---- validation: greedy answers ----------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, completions, _ = self.generate(batch, 1, greedy=True)
        texts = self.tokenizer.batch_decode([g[0] for g in completions], skip_special_tokens=True)
        rewards, parts = score_completions(
            texts,
            batch["records"],
            self.cfg["reward"]["weights"],
            self.cfg["reward"].get("extraction_mode", "auto"),
        )
        metrics = {f"reward_{k}": v.mean() for k, v in parts.items()}
        self.log_metrics("val", None, {"reward_mean": rewards.mean(), **metrics}, len(texts))

    # ---- the sampling RNG in the checkpoint --------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {"rollouts_done": self.rollouts_done, "seed": self.cfg["seed"]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is not None:
            self.rollouts_done = int(state["rollouts_done"])
