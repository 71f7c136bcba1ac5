"""Advantage estimators of online RL, pure functions over rewards (and values for PPO).

- :func:`grpo_advantages`: GRPO's group-relative advantage (DeepSeekMath, arXiv 2402.03300, §4.1.2):
  each completion's reward minus its group's mean, divided by the group's std. ``scale_std=False``
  is Dr. GRPO's "no std" variant (arXiv 2503.20783, §3.2), which removes the question-level
  difficulty bias. (DAPO's token-level normalisation, arXiv 2503.14476 eq. 8, is a loss aggregation:
  :func:`algorithms.losses.policy_gradient.aggregate`.)
- :func:`rloo_advantages`: REINFORCE leave-one-out (Ahmadian et al., arXiv 2402.14740, eq. 6): each
  completion's baseline is the mean reward of the other G−1 completions of its prompt.
- :func:`gae`: generalised advantage estimation (Schulman et al., arXiv 1506.02438, eq. 16) over a
  value head's per-token values, for PPO (the RLMEC paper's baseline).

Shapes: rewards of a group batch are ``[B, G]`` (B prompts, G completions each, a group is exactly
"G samples of one prompt"); token tensors are ``[N, T]`` with right-padded response masks.
"""

from __future__ import annotations

import torch

ESTIMATORS = ("grpo", "rloo", "ppo")


def _check_groups(rewards: torch.Tensor, min_g: int = 1) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G] (prompts × completions), got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < min_g:
        raise ValueError(
            f"this estimator needs at least {min_g} completions per prompt, got {rewards.shape[1]}"
        )


def grpo_advantages(rewards: torch.Tensor, scale_std: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: Â_i = (r_i − mean(r_group)) / (std(r_group) + eps), or without the division when
    ``scale_std`` is False (Dr. GRPO). ``std`` is the unbiased (Bessel) std over the G completions, as
    TRL's ``GRPOTrainer`` computes it; a group whose rewards are all equal gets Â = 0 either way.

    ``rewards`` [B, G] → advantages [B, G] (fp32)."""
    _check_groups(rewards, 2 if scale_std else 1)
    r = rewards.float()
    centred = r - r.mean(dim=1, keepdim=True)
    if not scale_std:
        return centred
    return centred / (r.std(dim=1, keepdim=True) + eps)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO: Â_i = r_i − (1/(G−1)) Σ_{j≠i} r_j, which equals G/(G−1) · (r_i − mean(r_group)).

    ``rewards`` [B, G] with G ≥ 2 → advantages [B, G] (fp32)."""
    _check_groups(rewards, 2)
    r = rewards.float()
    g = r.shape[1]
    others_mean = (r.sum(dim=1, keepdim=True) - r) / (g - 1)
    return r - others_mean


def zero_advantage_groups(rewards: torch.Tensor) -> torch.Tensor:
    """Per group [B] bool: every completion got the same reward (GRPO and RLOO give them Â = 0, so
    they teach nothing; DAPO's dynamic sampling filters them)."""
    _check_groups(rewards)
    return (rewards == rewards[:, :1]).all(dim=1)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens; returns ``(advantages, returns)`` [N, T].

        δ_t = r_t + γ·V_{t+1} − V_t        (V after the last response token is 0: the episode ends)
        Â_t = δ_t + γλ·Â_{t+1}
        R_t = Â_t + V_t                     (the value head's regression target)

    ``rewards`` [N, T]: per-token rewards (a sequence reward sits on the last response token; a KL
    penalty, when used as a reward, on every token); ``values`` [N, T]: V(s_t) from the value head;
    ``mask`` [N, T]: response tokens, contiguous from position 0 (right padding). Everything off the
    mask is 0 in the outputs. Computed in fp32 with no grad (advantages are constants of the loss).
    """
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(
            f"gae: rewards, values and mask must have one shape, got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    m = mask.float()
    r, v = rewards.detach().float() * m, values.detach().float() * m
    adv = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        next_v = v[:, t + 1] if t + 1 < r.shape[1] else torch.zeros_like(running)
        delta = r[:, t] + gamma * next_v - v[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        adv[:, t] = running
    return adv, (adv + v) * m


def whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise ``values`` to unit variance (and zero mean when ``shift_mean``) over the masked
    entries, as PPO implementations do with GAE advantages; 0 off the mask. Uses the biased variance."""
    m = mask.float()
    n = m.sum().clamp(min=1)
    mean = (values * m).sum() / n
    var = (((values - mean) * m) ** 2).sum() / n
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m
