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
