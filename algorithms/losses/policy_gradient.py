"""Online RL losses (GRPO, RLOO, PPO): the clipped surrogate with a KL penalty to the frozen reference,
and PPO's clipped value loss. Pure functions of per-token log-probs, tested apart from any model.

Per token t of completion i (PPO, Schulman et al. arXiv 1707.06347 eq. 7; GRPO, DeepSeekMath
arXiv 2402.03300 eq. 3):

    ρ_t   = exp(log π_θ(y_t) − log π_old(y_t))
    pg_t  = −min(ρ_t·Â_t, clip(ρ_t, 1−ε_low, 1+ε_high)·Â_t)
    KL_t  = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1     (the k3 estimator, DeepSeekMath eq. 4)
    ℓ_t   = pg_t + β·KL_t

This is the same per-token loss as TRL's ``GRPOTrainer`` (``beta`` with k3, ``epsilon``/``epsilon_high``).
π_old is the policy that sampled the completions (its log-probs are taken once, before the μ inner
passes, so on the first pass ρ = 1 exactly). ε_high > ε_low is DAPO's "clip-higher" (arXiv 2503.14476).

How ℓ_t is averaged (:func:`aggregate`, ``aggregation=``):

- ``sequence``: the mean over each completion's tokens, then over completions (GRPO's 1/|o_i| of eq. 3);
- ``token``: the sum over every token of the batch ÷ the number of tokens (DAPO's token-level
  normalisation, eq. 8): long completions weigh in proportion to their length;
- ``constant``: the sum ÷ (completions × ``max_tokens``), a constant independent of the lengths
  (Dr. GRPO, arXiv 2503.20783 §3.2), which removes the length bias of ``sequence``.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("sequence", "token", "constant")


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ ‖ π_ref): exp(d) − d − 1 with d = log π_ref − log π_θ (≥ 0,
    unbiased, and 0 exactly where the two agree). fp32."""
    d = ref_logps.float() - logps.float()
    return torch.exp(d) - d - 1.0


def aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, aggregation: str, max_tokens: int | None = None
) -> torch.Tensor:
    """Reduce a per-token loss [N, T] over the response ``mask`` to a scalar (see the module docstring)."""
    m = mask.float()
    if aggregation == "sequence":
        per_seq = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1)
        return per_seq.mean()
    if aggregation == "token":
        return (per_token * m).sum() / m.sum().clamp(min=1)
    if aggregation == "constant":
        length = max_tokens if max_tokens is not None else per_token.shape[-1]
        return (per_token * m).sum() / (per_token.shape[0] * max(1, int(length)))
    raise ValueError(f"aggregation={aggregation!r} must be one of {', '.join(AGGREGATIONS)}")


def clipped_surrogate_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    aggregation: str = "sequence",
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped policy-gradient loss with a k3 KL penalty; returns ``(loss, metrics)``.

    ``logps`` [N, T]: log π_θ of the sampled tokens (carries the grad); ``old_logps`` [N, T]: log π_old
    (no grad); ``advantages``: [N] (one per completion, broadcast to its tokens: GRPO, RLOO) or [N, T]
    (per token: GAE); ``mask`` [N, T]: the completion tokens; ``ref_logps`` [N, T]: log π_ref, needed
    when ``beta`` > 0; ``epsilon_high`` defaults to ``epsilon``.

    Metrics (detached): ``loss_pg``, ``kl`` (mean k3 over tokens; 0 without ``ref_logps``),
    ``clip_frac`` (share of tokens where the clipped term is the minimum and so gives no gradient:
    ρ > 1+ε_high with Â > 0 or ρ < 1−ε_low with Â < 0), ``ratio_mean`` (mean ρ over tokens).
    """
    if logps.shape != old_logps.shape or logps.shape != mask.shape:
        raise ValueError(
            f"clipped_surrogate_loss: logps, old_logps and mask must have one shape, got "
            f"{tuple(logps.shape)}, {tuple(old_logps.shape)}, {tuple(mask.shape)}"
        )
    if beta > 0 and ref_logps is None:
        raise ValueError("clipped_surrogate_loss: beta > 0 needs ref_logps")
    eps_low = float(epsilon)
    eps_high = float(epsilon if epsilon_high is None else epsilon_high)
    adv = advantages.float()
    if adv.dim() == 1:
        adv = adv.unsqueeze(1)
    m = mask.bool()
    ratio = torch.exp(logps.float() - old_logps.detach().float())
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    pg = -torch.minimum(unclipped, clipped)
    per_token = pg
    kl = torch.zeros_like(pg)
    if ref_logps is not None:
        kl = k3_kl(logps, ref_logps.detach())
        if beta > 0:
            per_token = pg + beta * kl
    loss = aggregate(per_token, m, aggregation, max_tokens)
    with torch.no_grad():
        n = m.sum().clamp(min=1)
        clip_active = (clipped < unclipped) & m
        metrics = {
            "loss_pg": aggregate(pg.detach(), m, aggregation, max_tokens),
            "kl": (kl.detach() * m).sum() / n,
            "clip_frac": clip_active.sum() / n,
            "ratio_mean": (ratio.detach() * m).sum() / n,
        }
    return loss, metrics


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's value loss (as in OpenAI's and TRL's PPO): ½·max((V − R)², (V_clip − R)²), with
    V_clip = V_old + clip(V − V_old, −c, c), averaged over the masked tokens. Returns
    ``(loss, {"value_clip_frac"})``."""
    m = mask.float()
    v, r, v_old = values.float(), returns.detach().float(), old_values.detach().float()
    v_clipped = v_old + (v - v_old).clamp(-clip, clip)
    unclipped, clipped = (v - r) ** 2, (v_clipped - r) ** 2
    n = m.sum().clamp(min=1)
    loss = 0.5 * (torch.maximum(unclipped, clipped) * m).sum() / n
    with torch.no_grad():
        frac = ((clipped > unclipped).float() * m).sum() / n
    return loss, {"value_clip_frac": frac}
