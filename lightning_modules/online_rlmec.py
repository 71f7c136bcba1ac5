"""OnlineRLMECModule: RLMEC (METHODS.md §3) iterated, with samples from the improving policy (issue #18 §2).

Each training step is one round:

1. the current policy samples G completions per prompt (as :class:`OnlineRLModule`, same decoder and
   checkpointed sampling stream), labelled correct or wrong by eval.py's answer extraction;
2. the frozen GRM rewrites the wrong ones with the minimum-edit procedure
   (``algorithms/minimum_edit.minimum_edit_rewrite``: locate the first wrong step, rewrite from it,
   keep the rewrite only if its answer is right) and scores every sample token by token
   (teacher-forced p_t after the "rewrite from step 1" prompt → ``grm_token_rewards``);
3. ``inner_steps`` (K) optimiser steps of the RLMEC loss L_RL + λ·L_IR (``algorithms/losses/rlmec.py``)
   on the round's originals and rewrites, ratios against the frozen initial policy π_ref.

Offline RLMEC (``module=rlmec`` on the ``rlmec_rl_data`` stage's file) is the special case of a single
round over the whole training set, with the epochs as its passes. The GRM shares the policy's
tokenizer, as in the offline stage; it is frozen, never sharded, and not saved in checkpoints.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from algorithms import reference as ref_lib
from algorithms.edit_steps import rewrite_messages
from algorithms.logprobs import model_token_logprobs
from algorithms.losses.rlmec import NORMALIZERS, rlmec_loss
from algorithms.minimum_edit import EditRequest, minimum_edit_rewrite
from algorithms.online_rlmec import rewrite_targets, scatter_rows, token_fields
from algorithms.rewards import answer_match_reward
from algorithms.rollouts import rollout_tensors
from inference.backends.hf import HFBackend
from inference.chat import encode_prompt
from inference.sampling import SamplingParams
from lightning_modules.online_rl import OnlineRLModule
from lightning_modules.online_rl_parts import eos_and_pad
from lightning_modules.rlmec import LOGGED as RLMEC_LOGGED
from utils.errors import ConfigError

GRM_DEFAULTS = {"path": None, "max_new_tokens": 256, "batch_size": 8, "dtype": "float32"}


def load_grm(
    path: str, dtype: str, policy_tokenizer: Any, cpu_linear: str = "auto"
) -> tuple[torch.nn.Module, Any]:
    """The frozen GRM and its tokenizer; a tokenizer other than the policy's is a ``ConfigError``."""
    from transformers import AutoModelForCausalLM

    from models import load_tokenizer
    from models.cpu_linear import use_onednn_linears

    tok = load_tokenizer(str(path))
    if tok.get_vocab() != policy_tokenizer.get_vocab():
        raise ConfigError(
            [
                f"module.grm.path={path}: the GRM's tokenizer differs from the policy's (RLMEC scores the policy's tokens)"
            ]
        )
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    use_onednn_linears(model, cpu_linear)  # the policy's model.cpu_linear (models/cpu_linear.py)
    model.requires_grad_(False)
    return model.eval(), tok


class OnlineRLMECModule(OnlineRLModule):
    def __init__(
        self,
        *args: Any,
        grm: dict[str, Any] | None = None,
        lam: float = 1.0,
        rlmec_epsilon: float = 0.3,
        normalizer: str = "nonzero",
        **kwargs: Any,
    ):
        kwargs.setdefault("beta", 0.0)  # RLMEC has no KL term: its ratios are against π_ref itself
        super().__init__(*args, **kwargs)
        grm = {**GRM_DEFAULTS, **(dict(grm) if grm else {})}
        problems = []
        if not grm["path"]:
            problems.append(
                "module.grm.path is required: the trained GRM's model folder (experiment=rlmec_grm_*)"
            )
        if normalizer not in NORMALIZERS:
            problems.append(f"module.normalizer={normalizer!r} must be one of {', '.join(NORMALIZERS)}")
        if not float(lam) >= 0 or not float(rlmec_epsilon) >= 0:
            problems.append("module.lam and module.rlmec_epsilon must be >= 0")
        if problems:
            raise ConfigError(problems)
        self.hparams.update(
            grm=grm, lam=float(lam), rlmec_epsilon=float(rlmec_epsilon), normalizer=normalizer
        )
        self.grm_cfg, self.lam, self.rlmec_epsilon, self.normalizer = (
            grm,
            float(lam),
            float(rlmec_epsilon),
            normalizer,
        )
        self._grm: list[Any] = []  # [model, tokenizer], kept off the module tree (frozen, never saved)

    def on_model_built(self) -> None:
        super().on_model_built()
        if self.ref_model is None:  # the RLMEC ratio needs π_ref whatever β is
            self.ref_model = ref_lib.frozen_copy(self.model)
            if getattr(self, "_device_mesh", None) is not None:
                self._fully_shard(self.ref_model)
        cpu_linear = self.model_cfg.get("cpu_linear", "auto")
        self._grm = list(load_grm(self.grm_cfg["path"], self.grm_cfg["dtype"], self.tokenizer, cpu_linear))

    def grm_editor(self, requests: list[EditRequest]) -> list[str]:
        """The GRM answers each request's chat prompt, greedily."""
        model, tok = self._grm
        backend = HFBackend(model.to(self.device), tok, batch_size=self.grm_cfg["batch_size"], model_id="grm")
        params = SamplingParams(temperature=0.0, max_new_tokens=self.grm_cfg["max_new_tokens"])
        return (
            [group[0].text for group in backend.generate([r.messages for r in requests], params)]
            if requests
            else []
        )

    def grm_token_probs(
        self, records: list[Any], texts: list[str], responses: list[list[int]]
    ) -> list[torch.Tensor]:
        """p_t of every response token under the GRM after the "rewrite from step 1" prompt."""
        model, tok = self._grm
        prompts = [encode_prompt(tok, rewrite_messages(rec, text, 1)) for rec, text in zip(records, texts)]
        t = rollout_tensors(prompts, [[r] for r in responses], eos_and_pad(model, tok)[1]).to(self.device)
        logp, mask = ref_lib.frozen_token_logprobs(
            model.to(self.device), t.input_ids, t.attention_mask, t.labels
        )
        return [row[m].exp().clamp(0.0, 1.0).cpu() for row, m in zip(logp, mask)]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        start = time.perf_counter()
        g = self.cfg["num_generations"]
        prompts, completions, gen_tokens = self.generate(batch, g)
        self.rollouts_done += 1
        gen_s = time.perf_counter() - start
        records = [rec for rec in batch["records"] for _ in range(g)]
        responses = [c for group in completions for c in group]
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        mode = self.cfg["reward"].get("extraction_mode", "auto")
        correct = [answer_match_reward(t, r, mode) == 1.0 for t, r in zip(texts, records)]
        start = time.perf_counter()
        report = minimum_edit_rewrite(records, texts, correct, self.grm_editor, mode)
        eos = eos_and_pad(self.model, self.tokenizer)[0][:1]
        rewrites = rewrite_targets(
            responses,
            report.results,
            lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"] + eos,
        )
        rewards, weights = token_fields(
            responses, rewrites, correct, self.grm_token_probs(records, texts, responses)
        )
        grm_s = time.perf_counter() - start
        start = time.perf_counter()
        loss, metrics, tokens = self.optimise_rlmec(prompts, responses, rewrites, rewards, weights, correct)
        train_s = time.perf_counter() - start
        n = len(responses)
        metrics.update(
            reward_mean=torch.tensor(sum(correct) / n),
            rewritten_frac=torch.tensor(report.counts["rewritten"] / max(1, n - sum(correct))),
            completion_len=torch.tensor(sum(map(len, responses)) / n),
            gen_tokens_per_s=torch.tensor(gen_tokens / max(gen_s, 1e-9)),
            grm_s=torch.tensor(grm_s),
            train_tokens_per_s=torch.tensor(tokens * self.cfg["inner_steps"] / max(train_s, 1e-9)),
        )
        self.log_metrics("train", loss, metrics, len(prompts))
        return loss

    def optimise_rlmec(
        self,
        prompts: list[list[int]],
        responses: list[list[int]],
        rewrites: list[list[int]],
        rewards: list[torch.Tensor],
        weights: list[torch.Tensor],
        correct: list[bool],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """K optimiser steps of L_RL + λ·L_IR over the round's N originals then N rewrites (one forward)."""
        g = self.cfg["num_generations"]
        row_prompts = [p for p in prompts for _ in range(g)]
        has = torch.tensor([len(r) > 0 for r in rewrites])
        targets = [
            r if len(r) else resp for r, resp in zip(rewrites, responses)
        ]  # no rewrite: masked off below
        t = rollout_tensors(
            row_prompts * 2, [[c] for c in responses + targets], eos_and_pad(self.model, self.tokenizer)[1]
        ).to(self.device)
        n = len(responses)
        mask = t.labels[:, 1:].ne(-100)
        ref = ref_lib.frozen_token_logprobs(
            self.ref_model, t.input_ids[:n], t.attention_mask[:n], t.labels[:n]
        )[0]
        r = scatter_rows(rewards, mask[:n])
        w = scatter_rows(
            [wt if ok else torch.zeros(len(tg)) for wt, ok, tg in zip(weights, has.tolist(), targets)],
            mask[n:],
        )
        rmask = mask[n:] & has.to(self.device).unsqueeze(1)
        opt, sched = self.optimizers(), self.lr_schedulers()
        for _ in range(self.cfg["inner_steps"]):
            logp, _ = model_token_logprobs(self.model, t.input_ids, t.attention_mask, t.labels)
            loss, metrics = rlmec_loss(
                logp[:n], ref, r, mask[:n], logp[n:], w, rmask, correct=torch.tensor(correct, device=self.device),
                epsilon=self.rlmec_epsilon, lam=self.lam, normalizer=self.normalizer,
            )  # fmt: skip
            self.optimizer_step_on(loss, opt, sched)
        return loss.detach(), {k: metrics[k] for k in RLMEC_LOGGED}, t.num_tokens
