"""The masked next-token negative log-likelihood, written once (torch only, no Quartet imports).

Used by chat SFT / the Ask model (``algorithms/losses/sft.py``), CaPO's SFT term
(``lightning_modules/capo.py``) and the Quartet MoE model's ``forward(labels=...)``. It has no Quartet
imports because it is copied, with the MoE modeling files, into every exported ``hf_model/`` folder.
"""

from __future__ import annotations

import torch

#: Label of a position that carries no loss (context, padding); transformers' convention.
IGNORE_INDEX = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x_t | x_<t) for t ≥ 1, in fp32, and the mask of positions that count.

    ``logits``: [B, T, V]; ``labels``: [B, T] with ``IGNORE_INDEX`` on positions that don't count.
    Returns ``(logp [B, T-1], mask [B, T-1] bool)`` aligned with ``labels[:, 1:]`` (position t of the
    logits predicts label t+1); ``logp`` is 0 where the mask is off.
    """
    shift_labels = labels[:, 1:].to(logits.device)
    mask = shift_labels.ne(IGNORE_INDEX)
    safe = shift_labels.masked_fill(~mask, 0)
    logp = torch.gather(logits[:, :-1, :].float().log_softmax(-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def masked_nll(
    logp: torch.Tensor, counts: torch.Tensor, num_items: int | torch.Tensor | None = None
) -> torch.Tensor:
    """L = −(1/N) Σ_{t: m_t=1} log p_θ(x_t | x_<t)  (METHODS.md §1, the SFT / Ask-model loss).

    ``logp`` holds log-probabilities that are already 0 where the mask is off: per token
    (``[B, T-1]``, with ``counts`` the mask) or summed per sequence (``[B]``, with ``counts`` the token
    counts). ``N`` is ``counts.sum()`` (at least 1), or ``num_items`` when given (the token count of a
    whole accumulated batch, as transformers passes ``num_items_in_batch``).
    """
    denom = counts.sum().clamp(min=1) if num_items is None else num_items
    return -logp.sum() / denom
