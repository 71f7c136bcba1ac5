"""RLMEC (fine-grained RL with a minimum-editing constraint, METHODS.md §3, arXiv 2401.06081).

:func:`rlmec_loss`, the policy objective L = L_RL + λ·L_IR over a batch of token log-probs, a pure
function tested apart from any model. The token rewards it consumes come from
:func:`algorithms.token_rewards.grm_token_rewards`.
"""

from __future__ import annotations

import torch

NORMALIZERS = ("nonzero", "tokens")


def rlmec_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    rewards: torch.Tensor,
    response_mask: torch.Tensor,
    rewrite_logps: torch.Tensor,
    rewrite_weights: torch.Tensor,
    rewrite_mask: torch.Tensor,
    correct: torch.Tensor | None = None,
    epsilon: float = 0.3,
    lam: float = 1.0,
    normalizer: str = "nonzero",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The RLMEC policy loss; returns ``(loss, metrics)``.

    Inputs (B samples; T original-response positions, T' rewrite positions; all log-probs are
    per-token log π(token | x, prefix), 0 off the masks):

    - ``policy_logps`` [B, T]: log π_θ(y_t | x, y_<t) of the original solution y (carries the grad);
    - ``ref_logps`` [B, T]: log π_ref(y_t | x, y_<t) from the frozen initial policy;
    - ``rewards`` [B, T]: the GRM token rewards r_t (:func:`grm_token_rewards`);
    - ``response_mask`` [B, T]: the response tokens of y;
    - ``rewrite_logps`` [B, T']: log π_θ(ŷ_j | x, ŷ_<j) of the rewrite ŷ (carries the grad);
    - ``rewrite_weights`` [B, T']: the imitation weights ω_j (1.0 edited, 0.5 kept);
    - ``rewrite_mask`` [B, T']: the response tokens of ŷ;
    - ``correct`` [B] bool (optional): which samples are correct, for the reward metrics.

    Equations (METHODS.md §3, step 7), ratios, rewards and reference log-probs in fp32:

        ρ_t  = exp(log π_θ(y_t) − log π_ref(y_t))                 (no grad)
        w_t  = min(ρ_t·r_t, clip(ρ_t, 1−ε, 1+ε)·r_t)               (no grad), ε = ``epsilon`` (0.3)
        L_RL = −Σ_t w_t · log π_θ(y_t) / N_RL
        L_IR = −Σ_j ω_j · log π_θ(ŷ_j | x, ŷ_<j) / N_IR
        L    = L_RL + λ·L_IR,  λ = ``lam`` (1.0)

    The normaliser:

    - ``"nonzero"`` (default, as in the official code): N_RL = #tokens with r_t ≠ 0, N_IR = #tokens
      with ω_j ≠ 0;
    - ``"tokens"``: N_RL = #response tokens of y, N_IR = #response tokens of ŷ.

    Each N is clamped to ≥ 1 (a batch with no non-zero reward has L_RL = 0).

    Metrics (detached scalars): ``loss_rl``, ``loss_ir``, ``nonzero_reward_frac`` (non-zero rewards
    ÷ response tokens), ``reward_correct`` / ``reward_wrong`` (mean r_t over the response tokens of
    correct / wrong samples; 0 when the batch has none, see ``tokens_correct`` / ``tokens_wrong``),
    ``clip_frac`` (the share of non-zero-reward tokens where the clipped branch is the minimum, i.e.
    ρ_t > 1+ε with r_t > 0 or ρ_t < 1−ε with r_t < 0), ``ratio_mean`` (mean ρ_t over response tokens)
    and ``n_rl`` / ``n_ir`` (the normalisers used).
    """
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer={normalizer!r} must be one of {', '.join(NORMALIZERS)}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon={epsilon} must be >= 0")
    if policy_logps.shape != ref_logps.shape or policy_logps.shape != rewards.shape:
        raise ValueError(
            "rlmec_loss: policy_logps, ref_logps and rewards must have the same shape, got "
            f"{tuple(policy_logps.shape)}, {tuple(ref_logps.shape)}, {tuple(rewards.shape)}"
        )
    if rewrite_logps.shape != rewrite_weights.shape:
        raise ValueError(
            "rlmec_loss: rewrite_logps and rewrite_weights must have the same shape, got "
            f"{tuple(rewrite_logps.shape)}, {tuple(rewrite_weights.shape)}"
        )
    mask = response_mask.bool()
    rmask = rewrite_mask.bool()
    logp = policy_logps.float() * mask
    r = rewards.float() * mask
    omega = rewrite_weights.float() * rmask

    with torch.no_grad():
        log_ratio = (policy_logps.detach().float() - ref_logps.float()) * mask
        ratio = torch.exp(log_ratio)
        unclipped = ratio * r
        clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * r
        w = torch.minimum(unclipped, clipped) * mask

    nonzero = r.ne(0) & mask
    if normalizer == "nonzero":
        n_rl = nonzero.sum()
        n_ir = (omega.ne(0) & rmask).sum()
    else:
        n_rl = mask.sum()
        n_ir = rmask.sum()
    loss_rl = -(w * logp).sum() / n_rl.clamp(min=1)
    loss_ir = -(omega * rewrite_logps.float() * rmask).sum() / n_ir.clamp(min=1)
    loss = loss_rl + lam * loss_ir

    with torch.no_grad():
        n_tokens = mask.sum()
        clip_active = (clipped < unclipped) & nonzero
        metrics = {
            "loss_rl": loss_rl.detach(),
            "loss_ir": loss_ir.detach(),
            "nonzero_reward_frac": nonzero.sum() / n_tokens.clamp(min=1),
            "clip_frac": clip_active.sum() / nonzero.sum().clamp(min=1),
            "ratio_mean": (ratio * mask).sum() / n_tokens.clamp(min=1),
            "n_rl": n_rl.float(),
            "n_ir": n_ir.float(),
        }
        if correct is not None:
            is_correct = correct.bool().view(-1, 1).expand_as(mask) & mask
            is_wrong = ~correct.bool().view(-1, 1).expand_as(mask) & mask
            metrics["tokens_correct"] = is_correct.sum().float()
            metrics["tokens_wrong"] = is_wrong.sum().float()
            metrics["reward_correct"] = (r * is_correct).sum() / is_correct.sum().clamp(min=1)
            metrics["reward_wrong"] = (r * is_wrong).sum() / is_wrong.sum().clamp(min=1)
    return loss, metrics
