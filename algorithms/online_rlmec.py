"""Online RLMEC's per-round data (pure functions): the rewrite targets and the per-token fields of the
RLMEC loss (METHODS.md §3, steps 5–7) for completions the current policy has just sampled.

Offline RLMEC writes these fields once with the ``rlmec_rl_data`` stage; online RLMEC computes the same
ones every round from fresh samples, in the policy's token ids:

- the response of sample i is the token ids the policy sampled (its EOS included);
- its rewrite target: the response itself for a correct sample (ŷ = y), the tokenised GRM rewrite for a
  wrong sample the minimum-edit procedure kept, nothing for a wrong sample it dropped;
- its token rewards r_t = ``grm_token_rewards``(p_t, correct), p_t the GRM's teacher-forced probability
  of y_t after the "rewrite from step 1" prompt;
- its imitation weights ω_j = ``imitation_weights``(y, ŷ, correct) (1.0 edited, 0.5 kept).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from algorithms.alignment import imitation_weights
from algorithms.minimum_edit import EditResult
from algorithms.token_rewards import grm_token_rewards


def rewrite_targets(
    responses: Sequence[Sequence[int]],
    results: Sequence[EditResult],
    encode: Callable[[str], list[int]],
) -> list[list[int]]:
    """ŷ per sample: the response for an ``identity`` result, ``encode(rewrite)`` for a ``rewritten``
    one, ``[]`` for a ``dropped`` one (no imitation target)."""
    if len(responses) != len(results):
        raise ValueError(f"rewrite_targets: {len(responses)} responses for {len(results)} edit results")
    out = []
    for ids, res in zip(responses, results):
        if res.status == "identity":
            out.append(list(ids))
        elif res.status == "rewritten" and res.rewrite:
            out.append(encode(res.rewrite))
        else:
            out.append([])
    return out


def token_fields(
    responses: Sequence[Sequence[int]],
    rewrites: Sequence[Sequence[int]],
    correct: Sequence[bool],
    grm_probs: Sequence[torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(rewards, weights)``: per sample, r_t over its response tokens and ω_j over its rewrite tokens
    (an empty tensor when it has no rewrite), fp32."""
    if not len(responses) == len(rewrites) == len(correct) == len(grm_probs):
        raise ValueError("token_fields: responses, rewrites, correct and grm_probs must have one length")
    rewards, weights = [], []
    for ids, target, ok, probs in zip(responses, rewrites, correct, grm_probs):
        if probs.numel() != len(ids):
            raise ValueError(
                f"token_fields: {probs.numel()} GRM probabilities for {len(ids)} response tokens"
            )
        rewards.append(grm_token_rewards(probs, bool(ok)))
        weights.append(
            torch.tensor(imitation_weights(list(ids), list(target), correct=bool(ok)), dtype=torch.float32)
        )
    return rewards, weights


def scatter_rows(values: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Per-row value lists placed on the row's masked positions of a [N, T] tensor (row-major, as
    ``model_token_logprobs`` lays out its log-probs); every list must fill its row's mask exactly."""
    counts = mask.sum(-1).tolist()
    if [int(v.numel()) for v in values] != [int(c) for c in counts]:
        raise ValueError("scatter_rows: a row's values do not match its masked positions")
    flat = torch.cat([v.float().reshape(-1) for v in values]) if values else torch.zeros(0)
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_scatter(
        mask.bool(), flat.to(mask.device)
    )
