"""Token-to-expert routers: top-k and Top-P (dynamic) routing.

Top-P routing follows "Harder Tasks Need More Experts: Dynamic Routing in MoE Models"
(Huang et al., arXiv 2403.07652, ACL 2024):

    P = softmax(W_r x)                                   (no bias, computed in fp32)
    sort P descending; keep experts until the cumulative sum first exceeds p
    S(x) = the kept experts (the expert whose probability crosses p is kept, so |S(x)| >= 1)
    y = sum_{i in S(x)} P_i * E_i(x)                     (raw, un-renormalised weights)

The router never applies a second softmax: ``probs`` is the single softmax of ``logits``, and the
combine weights are (optionally renormalised) entries of ``probs``, so gradients of the combine
weights and of the auxiliary losses both reach ``weight``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RouterKind = Literal["top_k", "top_p"]


@dataclass
class RouterOutput:
    """What a router returns for T tokens and E experts.

    Attributes:
        logits: [T, E] fp32 router logits ``W_r x``.
        probs: [T, E] fp32 ``softmax(logits)`` (one softmax, never applied twice).
        mask: [T, E] bool selection mask S(x): True where the token is dispatched to the expert.
        weights: [T, E] fp32 combine weights, zero outside ``mask``; differentiable w.r.t. the router.
    """

    logits: Tensor
    probs: Tensor
    mask: Tensor
    weights: Tensor


@dataclass
class RouterConfig:
    """Router settings (plain data, safe to keep in Hydra configs and HF configs).

    Attributes:
        kind: ``"top_p"`` (dynamic, the paper's method) or ``"top_k"``.
        top_p: threshold p in (0, 1] for top-p routing (paper default 0.4).
        top_k: k for top-k routing.
        min_experts: lower bound on experts per token (top-p only).
        max_experts: upper bound on experts per token (top-p only); None = no bound.
        renormalize: divide the kept probabilities by their sum. Off is the paper's faithful default
            for top-p; Mixtral-style top-k routing uses it on.
    """

    kind: RouterKind = "top_p"
    top_p: float = 0.4
    top_k: int = 2
    min_experts: int = 1
    max_experts: int | None = None
    renormalize: bool = False

    def validate(self, num_experts: int) -> None:
        """Raise ValueError with every problem found, for ``num_experts`` experts."""
        problems = []
        if num_experts < 1:
            problems.append(f"num_experts must be >= 1, got {num_experts}")
        if self.kind not in ("top_k", "top_p"):
            problems.append(f"router kind must be 'top_k' or 'top_p', got {self.kind!r}")
        if self.kind == "top_p":
            if not (0.0 < float(self.top_p) <= 1.0):
                problems.append(f"top_p must be in (0, 1], got {self.top_p}")
            if not (1 <= self.min_experts <= num_experts):
                problems.append(
                    f"min_experts must be in [1, num_experts={num_experts}], got {self.min_experts}"
                )
            if self.max_experts is not None:
                if not (1 <= self.max_experts <= num_experts):
                    problems.append(
                        f"max_experts must be in [1, num_experts={num_experts}], got {self.max_experts}"
                    )
                elif self.max_experts < self.min_experts:
                    problems.append(
                        f"max_experts ({self.max_experts}) must be >= min_experts ({self.min_experts})"
                    )
        if self.kind == "top_k" and not (1 <= self.top_k <= num_experts):
            problems.append(f"top_k must be in [1, num_experts={num_experts}], got {self.top_k}")
        if problems:
            raise ValueError("Invalid MoE router config: " + "; ".join(problems))


def top_p_mask(probs: Tensor, top_p: float, min_experts: int = 1, max_experts: int | None = None) -> Tensor:
    """Top-P selection mask (arXiv 2403.07652, Sec. 3).

    With P sorted descending, P_(1) >= P_(2) >= ..., rank j is kept iff
    ``sum_{l<j} P_(l) <= p``, i.e. experts are added until the cumulative sum first exceeds p and the
    crossing expert is kept. Rank 1 is always kept. ``p >= 1`` keeps every expert (no cumsum rounding
    can drop the tail). ``min_experts`` ranks are always kept and at most ``max_experts`` are kept.

    Args:
        probs: [T, E] probabilities (rows sum to 1).
        top_p: threshold p in (0, 1].

    Returns:
        [T, E] bool mask in the original expert order.
    """
    num_experts = probs.shape[-1]
    if top_p >= 1.0:
        keep_sorted = torch.ones_like(probs, dtype=torch.bool)
        order = None
    else:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        cumsum = sorted_p.cumsum(dim=-1)
        exclusive = torch.cat([torch.zeros_like(cumsum[..., :1]), cumsum[..., :-1]], dim=-1)
        keep_sorted = exclusive <= top_p
        keep_sorted[..., 0] = True
    ranks = torch.arange(num_experts, device=probs.device)
    if min_experts > 1:
        keep_sorted = keep_sorted | (ranks < min_experts)
    if max_experts is not None and max_experts < num_experts:
        keep_sorted = keep_sorted & (ranks < max_experts)
    if order is None:
        return keep_sorted
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def top_k_mask(probs: Tensor, top_k: int) -> Tensor:
    """Top-k selection mask: the k experts with the largest probability per token."""
    index = probs.topk(top_k, dim=-1).indices
    return torch.zeros_like(probs, dtype=torch.bool).scatter(-1, index, True)


def combine_weights(probs: Tensor, mask: Tensor, renormalize: bool) -> Tensor:
    """Combine weights ``P_i * 1[i in S(x)]``, optionally renormalised to sum to 1 per token."""
    weights = probs * mask
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    return weights


class Router(nn.Module):
    """Linear router without bias; logits, softmax and selection are computed in fp32.

    Args:
        hidden_size: input width H.
        num_experts: E.
        config: selection rule (see :class:`RouterConfig`).
    """

    def __init__(self, hidden_size: int, num_experts: int, config: RouterConfig | None = None) -> None:
        super().__init__()
        self.config = config or RouterConfig()
        self.config.validate(num_experts)
        self.hidden_size = hidden_size
        self.num_experts = num_experts
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))
        nn.init.normal_(self.weight, std=0.02)

    def select(self, probs: Tensor) -> Tensor:
        """Selection mask for fp32 probabilities [T, E]."""
        cfg = self.config
        if cfg.kind == "top_k":
            return top_k_mask(probs, cfg.top_k)
        return top_p_mask(probs, float(cfg.top_p), cfg.min_experts, cfg.max_experts)

    def forward(self, hidden_states: Tensor) -> RouterOutput:
        """Route tokens ``hidden_states`` [..., H] (flattened to [T, H])."""
        x = hidden_states.reshape(-1, self.hidden_size)
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                logits = F.linear(x.float(), self.weight.float())
        else:
            logits = F.linear(x.float(), self.weight.float())
        probs = logits.softmax(dim=-1)
        with torch.no_grad():
            mask = self.select(probs)
        weights = combine_weights(probs, mask, self.config.renormalize)
        return RouterOutput(logits=logits, probs=probs, mask=mask, weights=weights)

    def extra_repr(self) -> str:
        c = self.config
        rule = f"top_k={c.top_k}" if c.kind == "top_k" else f"top_p={c.top_p}"
        return f"hidden={self.hidden_size}, experts={self.num_experts}, {rule}, renormalize={c.renormalize}"


class TopKRouter(Router):
    """Top-k router (Mixtral-style when ``renormalize=True``)."""

    def __init__(self, hidden_size: int, num_experts: int, top_k: int = 2, renormalize: bool = True) -> None:
        super().__init__(
            hidden_size, num_experts, RouterConfig(kind="top_k", top_k=top_k, renormalize=renormalize)
        )


class TopPRouter(Router):
    """Top-P (dynamic) router of arXiv 2403.07652 with threshold ``top_p`` (default 0.4)."""

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        top_p: float = 0.4,
        min_experts: int = 1,
        max_experts: int | None = None,
        renormalize: bool = False,
    ) -> None:
        cfg = RouterConfig(
            kind="top_p",
            top_p=top_p,
            min_experts=min_experts,
            max_experts=max_experts,
            renormalize=renormalize,
        )
        super().__init__(hidden_size, num_experts, cfg)


def build_router(hidden_size: int, num_experts: int, config: RouterConfig | dict | None = None) -> Router:
    """Build a router from a :class:`RouterConfig` or a plain dict of its fields."""
    if isinstance(config, dict):
        unknown = set(config) - set(RouterConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"Unknown router option(s) {sorted(unknown)}; known: {sorted(RouterConfig.__dataclass_fields__)}"
            )
        config = RouterConfig(**config)
    return Router(hidden_size, num_experts, config)
