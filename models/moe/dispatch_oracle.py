"""Test oracle for the dropless dispatch: compute every expert on every token, then mask.

Used only by tests (and as a sanity baseline): it has none of the sorting/indexing of the dropless
dispatch, so agreement between the two checks the dispatch bookkeeping, forward and backward.

    out[t] = sum_e 1[e in S(t)] * w[t, e] * down_e( silu(gate_e x_t) * up_e x_t )
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def dense_moe_oracle(x: Tensor, mask: Tensor, weights: Tensor, gate_up: Tensor, down: Tensor) -> Tensor:
    """Dense "all experts, then mask" MoE.

    Args:
        x: [T, H]. mask: [T, E] bool. weights: [T, E]. gate_up: [E, 2I, H]. down: [E, H, I].

    Returns:
        [T, H] in ``x.dtype``.
    """
    out = x.new_zeros(x.shape)
    coef = (weights * mask).to(x.dtype)
    for e in range(gate_up.shape[0]):
        gate, up = F.linear(x, gate_up[e].to(x.dtype)).chunk(2, dim=-1)
        y = F.linear(F.silu(gate) * up, down[e].to(x.dtype))
        out = out + coef[:, e : e + 1] * y
    return out
