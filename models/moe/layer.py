"""MoE feed-forward layer: router + dropless SwiGLU experts, returning its aux tensors functionally.

``MoELayer.forward`` returns ``(output, aux)``. ``aux`` (:class:`MoEAux`) holds the tensors the
auxiliary losses and statistics need (router logits and probabilities, the actual dispatch mask).
Nothing is stored on the module or in globals, so activation checkpointing, which re-runs forward
during backward, cannot count an aux loss twice: the recomputed aux is simply discarded by autograd.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dispatch import DEFAULT_DISPATCH, DISPATCH_IMPLS, moe_dispatch
from .router import Router, RouterConfig, build_router


@dataclass
class MoEAux:
    """Per-layer routing tensors for the aux losses / statistics (T tokens, E experts).

    Attributes:
        router_logits: [T, E] fp32, differentiable w.r.t. the router weight.
        router_probs: [T, E] fp32 ``softmax(router_logits)``, differentiable.
        dispatch_mask: [T, E] bool, the experts actually used (top-p / top-k selection).
        token_mask: [T] bool, False for padding tokens to leave out of losses and stats; None = all.
        layer_idx: index of the decoder layer (for metric names), if known.
    """

    router_logits: Tensor
    router_probs: Tensor
    dispatch_mask: Tensor
    token_mask: Tensor | None = None
    layer_idx: int | None = None


def compute_dtype(x: Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for ``x``'s device, else ``x.dtype``."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


class SwiGLUExperts(nn.Module):
    """E SwiGLU experts as two 3-D weights (``nn.Linear`` [out, in] layout per expert).

    ``gate_up_proj`` [E, 2I, H] (gate rows first, then up rows), ``down_proj`` [E, H, I]. This is the
    layout of transformers' fused Mixtral experts, so weights copy across without transposes. Under
    FSDP2 both shard on dim 0 (experts) together with their decoder block. ``onednn_min_macs``: the
    ``model.cpu_linear`` threshold of the float32 CPU expert products (``models/cpu_linear.py``; None:
    ATen, the default), set by the model factory (``use_onednn_linears``).
    """

    onednn_min_macs: int | None = None

    def __init__(
        self, num_experts: int, hidden_size: int, intermediate_size: int, dispatch: str = DEFAULT_DISPATCH
    ):
        super().__init__()
        if dispatch not in DISPATCH_IMPLS:
            raise ValueError(f"Unknown MoE dispatch {dispatch!r}; choose from {sorted(DISPATCH_IMPLS)}")
        self.num_experts, self.hidden_size, self.intermediate_size = (
            num_experts,
            hidden_size,
            intermediate_size,
        )
        self.dispatch = dispatch
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))
        self.reset_parameters()

    def reset_parameters(self, std: float | None = None) -> None:
        """Normal init; default std 1/sqrt(fan_in) per projection."""
        nn.init.normal_(self.gate_up_proj, std=std or 1.0 / math.sqrt(self.hidden_size))
        nn.init.normal_(self.down_proj, std=std or 1.0 / math.sqrt(self.intermediate_size))

    def forward(self, x: Tensor, mask: Tensor, weights: Tensor, dispatch: str | None = None) -> Tensor:
        """``x`` [T, H], ``mask`` [T, E] bool, ``weights`` [T, E] -> [T, H] in the compute dtype."""
        run = functools.partial(
            moe_dispatch,
            mask=mask,
            weights=weights,
            gate_up=self.gate_up_proj,
            down=self.down_proj,
            impl=dispatch or self.dispatch,
            min_macs=self.onednn_min_macs,
        )
        if not torch.is_autocast_enabled(x.device.type):
            return run(x)
        dtype = compute_dtype(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return run(x.to(dtype))

    def extra_repr(self) -> str:
        return (
            f"experts={self.num_experts}, hidden={self.hidden_size}, intermediate={self.intermediate_size}, "
            f"dispatch={self.dispatch!r}"
        )


class SwiGLUMLP(nn.Module):
    """Dense SwiGLU MLP ``down(silu(gate x) * up x)`` (Llama layout: gate_proj/up_proj/down_proj)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoELayer(nn.Module):
    """Router + dropless SwiGLU experts.

    Args:
        hidden_size: H. intermediate_size: I (per expert). num_experts: E.
        router: a :class:`RouterConfig`, a dict of its fields, or a ready :class:`Router`.
        dispatch: dispatch implementation name (see ``dispatch.DISPATCH_IMPLS``).
        layer_idx: recorded in the returned aux.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_experts: int,
        router: RouterConfig | dict | Router | None = None,
        dispatch: str = DEFAULT_DISPATCH,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.router = router if isinstance(router, Router) else build_router(hidden_size, num_experts, router)
        if self.router.num_experts != num_experts or self.router.hidden_size != hidden_size:
            raise ValueError(
                f"router has {self.router.num_experts} experts / hidden {self.router.hidden_size}, "
                f"layer has {num_experts} / {hidden_size}"
            )
        self.experts = SwiGLUExperts(num_experts, hidden_size, intermediate_size, dispatch)

    def forward(self, hidden_states: Tensor, token_mask: Tensor | None = None) -> tuple[Tensor, MoEAux]:
        """Route and combine.

        Args:
            hidden_states: [..., H].
            token_mask: optional bool/0-1 tensor of shape ``hidden_states.shape[:-1]``; False marks
                padding, which is still computed (dropless) but left out of the aux losses/stats.

        Returns:
            ``(output [..., H], aux)``.
        """
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        routed = self.router(x)
        out = self.experts(x, routed.mask, routed.weights)
        aux = MoEAux(
            router_logits=routed.logits,
            router_probs=routed.probs,
            dispatch_mask=routed.mask,
            token_mask=None if token_mask is None else token_mask.reshape(-1).bool(),
            layer_idx=self.layer_idx,
        )
        return out.reshape(shape), aux
