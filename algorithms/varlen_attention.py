"""``sdpa_varlen``: SDPA run row by row on a packed sequence (CPU's answer to flash-attention's varlen).

With ``attention_mask=None`` and restarting ``position_ids``, transformers' SDPA path attends over the
packed sequence with a block-diagonal boolean mask: correct, but the CPU kernel still computes all N²
scores of the N packed tokens (Σ_i L_i² are needed) and a mask rules out its fastest causal path.
This attention function takes the rows' boundaries (``cu_seq_lens_q``, which the forward passes down to
attention as keyword arguments) and runs ``scaled_dot_product_attention(is_causal=True)`` on each row:
Σ_i L_i² work, no mask. Without ``cu_seq_lens_q`` (a padded batch, generation) it is transformers'
``sdpa`` unchanged, so a model can keep it for every batch.

Registered with transformers' ``AttentionInterface`` (and the ``sdpa`` mask builder) on import;
:func:`use_varlen_sdpa` switches a model from ``sdpa`` to it. Written here because neither torch nor
transformers ships a variable-length attention for CPU (flex attention does skip the masked blocks, but
needs ``torch.compile`` and recompiles for every new packed length; see ``bench/packing.py --attention``).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "sdpa_varlen"


def varlen_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of a packed ``[1, heads, N, d]`` sequence, row by row (see the module docstring);
    returns ``[1, N, heads, d]`` as transformers' attention functions do."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    gqa = query.shape[1] != key.shape[1]
    bounds = cu.tolist()
    outs = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, s:e],
            key[:, :, s:e],
            value[:, :, s:e],
            dropout_p=dropout,
            scale=scaling,
            is_causal=True,
            enable_gqa=gqa,
        )
        for s, e in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, varlen_sdpa_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_varlen_sdpa(model: torch.nn.Module) -> bool:
    """Switch a model that runs transformers' ``sdpa`` to ``sdpa_varlen`` (same results; faster on
    packed batches). Returns whether the model now runs it."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if getattr(model, "quartet_block_mask", False):  # kept on the block-diagonal mask (benchmarks)
        return False
    if impl == NAME:
        return True
    if impl != "sdpa":
        return False
    for sub in model.modules():  # the model and its sub-configs (transformers 5 keeps one per module)
        cfg = getattr(sub, "config", None)
        if getattr(cfg, "_attn_implementation", None) == "sdpa":
            cfg._attn_implementation = NAME
    return True
