"""Per-token log-probabilities of given labels under a causal LM's logits, over a response mask.

Shared by every method that scores responses: CaPO (sequence log-probs of chosen/rejected), RLMEC
(token log-probs for ratios and rewards) and reference-model pre-passes.
"""

from __future__ import annotations

import torch

from models.nll import IGNORE_INDEX, token_logprobs

__all__ = ["model_token_logprobs", "sequence_logprobs", "token_logprobs"]


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t log p(y_t | context, y_<t) over response tokens: ``(sum [B], token count [B])``."""
    logp, mask = token_logprobs(logits, labels)
    return logp.sum(-1), mask.sum(-1)


def model_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs(model(input_ids).logits, labels)``, with the LM head and the log-softmax run only
    on the positions whose next token counts (``labels != -100``).

    Uses transformers' boolean ``logits_to_keep`` (only those hidden states are projected to the
    vocabulary), which saves most of the head's cost when the context is long and the response short.
    Models whose forward does not take it fall back to full logits, with the same result.
    Returns ``(logp [B, T-1] fp32, mask [B, T-1] bool)``, ``logp`` 0 where the mask is off.
    """
    shift_mask = labels[:, 1:].ne(IGNORE_INDEX)
    keep = torch.nn.functional.pad(shift_mask, (0, 1), value=False)
    n_keep = int(shift_mask.sum())
    if not getattr(model, "_quartet_full_logits", False):
        try:
            logits = model(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False
            ).logits
        except TypeError:
            logits = None
        if logits is not None and logits.numel() == n_keep * logits.shape[-1]:
            targets = labels[:, 1:][shift_mask]
            logp = -torch.nn.functional.cross_entropy(
                logits.reshape(n_keep, -1).float(), targets, reduction="none"
            )
            out = torch.zeros(shift_mask.shape, dtype=logp.dtype, device=logp.device)
            return out.masked_scatter(shift_mask, logp), shift_mask
        model._quartet_full_logits = True  # this model ignores a boolean logits_to_keep
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return token_logprobs(logits, labels)
