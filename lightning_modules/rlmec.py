"""RLMECModule: token-level RL from a generative reward model under a minimum-editing constraint
(METHODS.md §3, step 7; loss in ``algorithms/losses/rlmec.py``).

Offline over fixed RL data (``datamodules/rlmec_token_data.py``): the token rewards r_t, the reference
log-probs log π_ref(y_t) and the imitation weights ω_j come precomputed with the data, so the frozen
reference costs nothing during training. Each step runs ONE forward of the policy over the batch of
2B rows (the B original solutions, then their B rewrites) through the shared log-prob helper, which
projects only the response positions to the vocabulary.

Ablations (the paper's, METHODS.md §3): ``lam=0`` drops L_IR; ``reward_mode=sequence`` replaces the
token rewards of each sample by their mean over its response (one sequence-level reward broadcast to
every token), which removes the token-level credit assignment and keeps everything else.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from algorithms import reference as ref_lib
from algorithms.losses.rlmec import NORMALIZERS, rlmec_loss
from lightning_modules.causal_lm import CausalLMModule
from utils.errors import ConfigError

REWARD_MODES = ("token", "sequence")
LOGGED = (
    "loss_rl",
    "loss_ir",
    "nonzero_reward_frac",
    "reward_correct",
    "reward_wrong",
    "clip_frac",
    "ratio_mean",
)


def sequence_level_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's mean reward over its response, on every response token (the no-token-reward ablation)."""
    mean = (rewards * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    return mean * mask


class RLMECModule(CausalLMModule):
    consumes: ClassVar[tuple[str, ...]] = ("rlmec",)  # utils.batch_kinds

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        fsdp_param_dtype: str | None = None,
        epsilon: float = 0.3,
        lam: float = 1.0,
        normalizer: str = "nonzero",
        reward_mode: str = "token",
        disable_dropout: bool = True,
        logprob_impl: str = "chunked",
        logprob_chunk_tokens: int | None = None,
    ):
        super().__init__(
            model, optimizer, scheduler, compile, fsdp_param_dtype, logprob_impl, logprob_chunk_tokens
        )
        problems = []
        if not float(epsilon) >= 0:
            problems.append(f"module.epsilon={epsilon} must be >= 0")
        if not float(lam) >= 0:
            problems.append(f"module.lam={lam} must be >= 0")
        if normalizer not in NORMALIZERS:
            problems.append(f"module.normalizer={normalizer!r} must be one of {', '.join(NORMALIZERS)}")
        if reward_mode not in REWARD_MODES:
            problems.append(f"module.reward_mode={reward_mode!r} must be one of {', '.join(REWARD_MODES)}")
        if problems:
            raise ConfigError(problems)
        self.hparams.update(
            epsilon=float(epsilon),
            lam=float(lam),
            normalizer=normalizer,
            reward_mode=reward_mode,
            disable_dropout=disable_dropout,
        )
        self.epsilon, self.lam = float(epsilon), float(lam)
        self.normalizer, self.reward_mode, self.disable_dropout = normalizer, reward_mode, disable_dropout

    def on_model_built(self) -> None:
        if self.disable_dropout:  # ratios against π_ref need deterministic log-probs
            ref_lib.disable_dropout(self.model)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The RLMEC loss of one collated batch (B originals then B rewrites) and its metrics."""
        b = batch["correct"].shape[0]
        logp, mask, _ = self.batch_logprobs(batch)  # padded or packed: on the padded grid either way
        # per-token fields sit at their token's position; log-probs of token t sit at t-1
        rewards, ref_logps, weights = (batch[k][:, 1:].float() for k in ("rewards", "ref_logps", "weights"))
        if self.reward_mode == "sequence":
            rewards = sequence_level_rewards(rewards, mask[:b])
        return rlmec_loss(
            logp[:b],
            ref_logps,
            rewards,
            mask[:b],
            logp[b:],
            weights,
            mask[b:],
            correct=batch["correct"],
            epsilon=self.epsilon,
            lam=self.lam,
            normalizer=self.normalizer,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, metrics = self.compute_loss(batch)
        self._log_step("train", loss, metrics, batch)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, metrics = self.compute_loss(batch)
        self._log_step("val", loss, metrics, batch)

    def _log_step(
        self, split: str, loss: torch.Tensor, metrics: dict[str, torch.Tensor], batch: dict
    ) -> None:
        n = int(batch["correct"].shape[0])
        keys = [k for k in LOGGED if k in metrics]
        values = torch.stack([loss.detach(), *(metrics[k] for k in keys)]).unbind()
        sync = split == "val"
        for key, value in zip(("loss", *keys), values):
            self.log(f"{split}/{key}", value, batch_size=n, prog_bar=key == "loss", sync_dist=sync)
