"""Per-token log-probabilities of given labels under a causal LM's logits, over a response mask.

Shared by every method that scores responses: CaPO (sequence log-probs of chosen/rejected), RLMEC
(token log-probs for ratios and rewards) and reference-model pre-passes.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x_t | x_<t) for t ≥ 1, in fp32, and the mask of positions that count.

    ``logits``: [B, T, V]; ``labels``: [B, T] with -100 on positions that don't count (context,
    padding). Returns ``(logp [B, T-1], mask [B, T-1] bool)`` aligned with ``labels[:, 1:]``;
    ``logp`` is 0 where the mask is off. Uses log_softmax + gather without materialising more than
    one fp32 copy of the logits.
    """
    shift_labels = labels[:, 1:]
    mask = shift_labels.ne(IGNORE_INDEX)
    safe = shift_labels.masked_fill(~mask, 0)
    logits = logits[:, :-1, :].float()
    logp = torch.gather(logits.log_softmax(-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t log p(y_t | context, y_<t) over response tokens: ``(sum [B], token count [B])``."""
    logp, mask = token_logprobs(logits, labels)
    return logp.sum(-1), mask.sum(-1)
