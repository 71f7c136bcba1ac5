"""Auxiliary MoE router losses and routing statistics, as pure functions over tensors.

For Top-P dynamic routing (Huang et al., "Harder Tasks Need More Experts: Dynamic Routing in MoE
Models", arXiv 2403.07652). With N experts, router probabilities P = softmax(W_r x) over T tokens:

* dynamic loss (router entropy, pushes the router towards confident, sparse choices)
      L_d = (1/T) sum_t  -sum_i P_{t,i} log P_{t,i}
* balance loss (Switch/GShard style, with f taken from the ACTUAL top-p selection)
      L_b = N * sum_i f_i * Q_i,
      f_i = (# dispatched (token, expert) pairs with expert i) / (# dispatched pairs)   (no gradient)
      Q_i = (1/T) sum_t P_{t,i}
  L_b = 1 under uniform routing and grows as load concentrates.
* router z-loss (ST-MoE, Zoph et al. 2022, arXiv 2202.08906)
      L_z = (1/T) sum_t (log sum_i exp(z_{t,i}))^2
* total (averaged over MoE layers)
      L = L_lm + alpha * L_b + beta * L_d (+ gamma * L_z),   alpha = 1e-2, beta = 1e-4.

Every aux object passed to :func:`moe_aux_loss` needs ``router_logits`` [T, N], ``router_probs``
[T, N], ``dispatch_mask`` [T, N] bool, and optionally ``token_mask`` [T] bool and ``layer_idx``
(see ``models.moe.layer.MoEAux``). The per-rank statistics are local to the
batch a rank sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor


class RoutingAux(Protocol):
    router_logits: Tensor
    router_probs: Tensor
    dispatch_mask: Tensor
    token_mask: Tensor | None
    layer_idx: int | None


def _select(x: Tensor, token_mask: Tensor | None) -> Tensor:
    return x if token_mask is None else x[token_mask.reshape(-1).bool()]


def balance_loss(router_probs: Tensor, dispatch_mask: Tensor, token_mask: Tensor | None = None) -> Tensor:
    """Balance loss ``L_b = N * sum_i f_i * Q_i`` (arXiv 2403.07652; Fedus et al. 2021 Eq. 4).

    ``f_i`` is the fraction of dispatched (token, expert) pairs routed to expert i, from the actual
    selection ``dispatch_mask`` (no gradient); ``Q_i`` is the mean router probability of expert i
    (carries the gradient to the router). Equals 1 under uniform routing.

    Args:
        router_probs: [T, N] probabilities (fp32). dispatch_mask: [T, N] bool.
        token_mask: optional [T] bool, False for padding tokens to ignore.
    """
    probs = _select(router_probs.float(), token_mask)
    mask = _select(dispatch_mask, token_mask).float()
    num_experts = probs.shape[-1]
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    with torch.no_grad():
        counts = mask.sum(dim=0)
        f = counts / counts.sum().clamp_min(1.0)
    q = probs.mean(dim=0)
    return num_experts * (f * q).sum()


def router_entropy(router_logits: Tensor) -> Tensor:
    """Per-token router entropy ``-sum_i P_i log P_i`` [T], from logits (stable, fp32)."""
    log_p = torch.log_softmax(router_logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def dynamic_loss(router_logits: Tensor, token_mask: Tensor | None = None) -> Tensor:
    """Dynamic loss ``L_d = mean_t -sum_i P_{t,i} log P_{t,i}`` (arXiv 2403.07652).

    Minimising the router entropy makes Top-P routing confident, so fewer experts are needed to reach
    the threshold p. Computed from logits with ``log_softmax`` (no ``0 * log 0`` problems).

    Args:
        router_logits: [T, N]. token_mask: optional [T] bool.
    """
    ent = _select(router_entropy(router_logits), token_mask)
    return ent.mean() if ent.numel() else ent.sum() * 0.0


def router_z_loss(router_logits: Tensor, token_mask: Tensor | None = None) -> Tensor:
    """Router z-loss ``L_z = mean_t (logsumexp_i z_{t,i})^2`` (ST-MoE, arXiv 2202.08906 Eq. 5)."""
    z = _select(torch.logsumexp(router_logits.float(), dim=-1), token_mask)
    return z.pow(2).mean() if z.numel() else z.sum() * 0.0


@torch.no_grad()
def routing_stats(
    router_probs: Tensor,
    dispatch_mask: Tensor,
    token_mask: Tensor | None = None,
    router_logits: Tensor | None = None,
    reference_k: int = 2,
) -> dict[str, Tensor]:
    """Per-layer routing statistics (detached).

    Returns a dict with:
        ``experts_per_token``: mean number of experts per token (scalar);
        ``experts_per_token_hist``: [N+1] counts of tokens using k = 0..N experts;
        ``tokens_per_expert``: [N] number of tokens dispatched to each expert;
        ``expert_fraction``: [N] f_i, share of dispatched pairs per expert;
        ``router_entropy``: mean router entropy (scalar);
        ``activated_ratio_vs_top2``: mean experts per token / ``reference_k`` (the activated-parameter
            ratio of the expert FFNs against Top-2 routing);
        ``load_imbalance``: max_i tokens_i / mean_i tokens_i (1 = perfectly balanced).
    """
    probs = _select(router_probs.float(), token_mask)
    mask = _select(dispatch_mask, token_mask)
    num_experts = probs.shape[-1]
    per_token = mask.sum(dim=-1)
    tokens_per_expert = mask.sum(dim=0)
    total = tokens_per_expert.sum().clamp_min(1)
    mean_k = per_token.float().mean() if per_token.numel() else probs.new_zeros(())
    if router_logits is not None:
        ent = _select(router_entropy(router_logits), token_mask)
    else:
        ent = -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(dim=-1)
    return {
        "experts_per_token": mean_k,
        "experts_per_token_hist": torch.bincount(per_token.long(), minlength=num_experts + 1),
        "tokens_per_expert": tokens_per_expert,
        "expert_fraction": tokens_per_expert.float() / total,
        "router_entropy": ent.mean() if ent.numel() else probs.new_zeros(()),
        "activated_ratio_vs_top2": mean_k / reference_k,
        "load_imbalance": tokens_per_expert.float().max() / tokens_per_expert.float().mean().clamp_min(1e-9),
    }


def moe_aux_loss(
    aux_list: Sequence[RoutingAux],
    alpha: float = 1e-2,
    beta: float = 1e-4,
    z: float = 0.0,
    prefix: str = "moe/",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted aux loss averaged over MoE layers: ``alpha * L_b + beta * L_d + z * L_z``.

    Add the returned loss to the LM loss: ``L = L_lm + alpha * L_b + beta * L_d`` (arXiv 2403.07652,
    alpha = 1e-2, beta = 1e-4).

    Returns:
        ``(loss, metrics)``: ``loss`` is a differentiable scalar (0 when ``aux_list`` is empty);
        ``metrics`` maps names to detached scalars: ``{prefix}balance_loss``, ``dynamic_loss`` (= the
        mean router entropy), ``z_loss`` (when ``z``), ``aux_loss``, ``experts_per_token``,
        ``activated_ratio_vs_top2``, and per layer ``{prefix}layer{idx}/experts_per_token`` and ``.../balance_loss``.
    """
    if len(aux_list) == 0:
        return torch.zeros(()), {}
    balances, dynamics, zs = [], [], []
    metrics: dict[str, Tensor] = {}
    k_means = []
    for pos, aux in enumerate(aux_list):
        tm = aux.token_mask
        lb = balance_loss(aux.router_probs, aux.dispatch_mask, tm)
        ld = dynamic_loss(aux.router_logits, tm)
        balances.append(lb)
        dynamics.append(ld)
        if z:
            zs.append(router_z_loss(aux.router_logits, tm))
        with torch.no_grad():
            k_mean = _select(aux.dispatch_mask, tm).sum(dim=-1).float().mean()
        k_means.append(k_mean)
        idx = aux.layer_idx if getattr(aux, "layer_idx", None) is not None else pos
        metrics[f"{prefix}layer{idx}/experts_per_token"] = k_mean
        metrics[f"{prefix}layer{idx}/balance_loss"] = lb.detach()
    l_b = torch.stack(balances).mean()
    l_d = torch.stack(dynamics).mean()
    loss = alpha * l_b + beta * l_d
    if z:
        l_z = torch.stack(zs).mean()
        loss = loss + z * l_z
        metrics[f"{prefix}z_loss"] = l_z.detach()
    mean_k = torch.stack(k_means).mean()
    metrics.update(
        {
            f"{prefix}balance_loss": l_b.detach(),
            f"{prefix}dynamic_loss": l_d.detach(),
            f"{prefix}aux_loss": loss.detach(),
            f"{prefix}experts_per_token": mean_k,
            f"{prefix}activated_ratio_vs_top2": mean_k / 2.0,
        }
    )
    return loss, metrics
