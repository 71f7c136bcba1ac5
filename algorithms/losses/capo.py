"""CaPO (context-aware preference optimization, Parrot, METHODS.md §1): a DPO-family loss where the
rejected answer was produced under a corrupted context, and every log-prob is taken under the true
full context c.

The loss is a pure function of sequence log-probs, so it is tested apart from any model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def capo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The CaPO objective over a batch of pairs; returns ``(mean loss, per-pair metrics)``.

    Inputs are sequence log-probs Σ_t log π(y_t | c, y_<t) over response tokens only, shape [B], for
    the chosen answer y_w and the rejected answer y_l, each under the policy π_θ and the frozen
    reference π_ref (the SFT model). With the implicit rewards

        r_w = β (log π_θ(y_w|c) − log π_ref(y_w|c)),   r_l = β (log π_θ(y_l|c) − log π_ref(y_l|c)),

    and Δ = (r_w − r_l) / β, the loss types are:

    - ``sigmoid`` (the paper's CaPO / DPO objective, the default):
          L_CaPO = −log σ( β [ (log π_θ(y_w|c) − log π_ref(y_w|c)) − (log π_θ(y_l|c) − log π_ref(y_l|c)) ] )
      With ``label_smoothing`` ε > 0 this becomes conservative DPO (Mitchell, 2023), which treats each
      label as flipped with probability ε:  L = −(1 − ε) log σ(βΔ) − ε log σ(−βΔ).
    - ``ipo`` (Azar et al., 2023, Eq. 17, with τ = β):  L = (Δ − 1/(2β))².
      When ``chosen_lengths``/``rejected_lengths`` are given, each log-ratio is first divided by its
      response's token count (the per-token form TRL uses); without them it is the paper's
      sequence-level form.
    - ``hinge`` (SLiC-HF, Zhao et al., 2023, with the reference-model log-ratio):
          L = max(0, 1 − βΔ).

    ``label_smoothing`` only applies to ``sigmoid``; it must be 0 for the others.

    Returned metrics are detached per-pair tensors of shape [B] (callers average them):
    ``rewards/chosen`` (r_w), ``rewards/rejected`` (r_l), ``rewards/margins`` (r_w − r_l),
    ``rewards/accuracies`` (1.0 where r_w > r_l), ``logps/chosen``, ``logps/rejected`` (policy
    sequence log-probs) and ``losses`` (the per-pair loss).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} must be one of {', '.join(LOSS_TYPES)}")
    if not beta > 0:
        raise ValueError(f"beta={beta} must be > 0")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 0.5)")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to loss_type='sigmoid' only (got loss_type={loss_type!r})")

    chosen_logratios = policy_chosen_logps.float() - ref_chosen_logps.float()
    rejected_logratios = policy_rejected_logps.float() - ref_rejected_logps.float()

    if loss_type == "sigmoid":
        z = beta * (chosen_logratios - rejected_logratios)
        losses = -F.logsigmoid(z)
        if label_smoothing:
            losses = (1.0 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-z)
    elif loss_type == "ipo":
        c, r = chosen_logratios, rejected_logratios
        if chosen_lengths is not None and rejected_lengths is not None:
            c = c / chosen_lengths.to(c).clamp(min=1)
            r = r / rejected_lengths.to(r).clamp(min=1)
        losses = (c - r - 1.0 / (2.0 * beta)) ** 2
    else:  # hinge
        losses = torch.relu(1.0 - beta * (chosen_logratios - rejected_logratios))

    with torch.no_grad():
        chosen_rewards = beta * chosen_logratios.detach()
        rejected_rewards = beta * rejected_logratios.detach()
        metrics = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/margins": chosen_rewards - rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "logps/chosen": policy_chosen_logps.detach().float(),
            "logps/rejected": policy_rejected_logps.detach().float(),
            "losses": losses.detach(),
        }
    return losses.mean(), metrics
