"""Per-token log-probabilities of given labels under a causal LM's logits, over a response mask.

Shared by every method that scores responses: CaPO (sequence log-probs of chosen/rejected), RLMEC
(token log-probs for ratios and rewards) and reference-model pre-passes.
"""

from __future__ import annotations

import torch

from models.nll import IGNORE_INDEX, masked_nll, token_logprobs

__all__ = ["IGNORE_INDEX", "masked_nll", "model_token_logprobs", "sequence_logprobs", "token_logprobs"]


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_t log p(y_t | context, y_<t) over response tokens: ``(sum [B], token count [B])``."""
    logp, mask = token_logprobs(logits, labels)
    return logp.sum(-1), mask.sum(-1)


def labelled_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits of only the positions whose next token counts (``labels != -100``): ``(logits [N, V],
    targets [N], mask [B, T-1] bool)``, N the number of counted tokens, in row-major order.

    Uses transformers' boolean ``logits_to_keep`` (only those hidden states are projected to the
    vocabulary), which saves the LM head's cost on every uncounted position (the context of a response,
    the other role's turns in chat SFT). Models whose forward does not take it fall back to full logits,
    with the same result.
    """
    shift_mask = labels[:, 1:].ne(IGNORE_INDEX)
    targets = labels[:, 1:][shift_mask]
    n_keep = int(targets.numel())
    if not getattr(model, "_quartet_full_logits", False):
        keep = torch.nn.functional.pad(shift_mask, (0, 1), value=False)
        try:
            logits = model(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False
            ).logits
        except TypeError:
            logits = None
        if logits is not None and logits.numel() == n_keep * logits.shape[-1]:
            return logits.reshape(n_keep, -1), targets, shift_mask
        model._quartet_full_logits = True  # this model ignores a boolean logits_to_keep
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return logits[:, :-1][shift_mask], targets, shift_mask


def model_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs(model(input_ids).logits, labels)``, with the LM head and the log-softmax run only
    on the positions whose next token counts (:func:`labelled_logits`).
    Returns ``(logp [B, T-1] fp32, mask [B, T-1] bool)``, ``logp`` 0 where the mask is off.
    """
    logits, targets, mask = labelled_logits(model, input_ids, attention_mask, labels)
    logp = -torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    out = torch.zeros(mask.shape, dtype=logp.dtype, device=logp.device)
    return out.masked_scatter(mask, logp), mask
