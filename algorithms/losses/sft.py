"""Masked causal-LM loss (chat SFT and the Parrot Ask model)."""

from __future__ import annotations

import torch

from algorithms.logprobs import IGNORE_INDEX, masked_nll, token_logprobs

__all__ = ["IGNORE_INDEX", "masked_causal_lm_loss", "selected_tokens_loss"]


def masked_causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean next-token negative log-likelihood over the tokens whose label is not -100.

    L = −(1/N) Σ_{t: m_t=1} log p_θ(x_t | x_<t), with N = Σ_t m_t (METHODS.md §1; the mask m selects
    assistant tokens for chat SFT, user tokens for the Ask model). Logits at position t predict
    label t+1. Returns the loss and ``{"tokens": N, "correct": #argmax hits}`` (both detached).
    """
    logp, valid = token_logprobs(logits, labels)
    n = valid.sum()
    if n == 0:
        raise ValueError("masked_causal_lm_loss: the batch has no token with a label (all labels are -100)")
    loss = masked_nll(logp, valid)
    with torch.no_grad():
        correct = (logits[:, :-1, :].argmax(-1).eq(labels[:, 1:]) & valid).sum()
    return loss, {"tokens": n.detach(), "correct": correct}


def selected_tokens_loss(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The same loss as :func:`masked_causal_lm_loss`, from the logits of the counted positions only
    (``logits [N, V]`` predicting ``targets [N]``, as ``components.logprobs.labelled_logits`` gives them):
    L = −(1/N) Σ_i log softmax(logits_i)[targets_i]. Returns the loss and ``{"tokens", "correct"}``."""
    n = targets.numel()
    if n == 0:
        raise ValueError("selected_tokens_loss: the batch has no token with a label (all labels are -100)")
    logp = -torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    loss = masked_nll(logp, torch.ones_like(targets))  # every selected position counts
    with torch.no_grad():
        correct = logits.argmax(-1).eq(targets).sum()
    return loss, {"tokens": torch.tensor(n, device=logits.device), "correct": correct}
