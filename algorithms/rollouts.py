"""A group batch of rollouts as training tensors (pure): B prompts × G completions → N = B·G rows of
``prompt + completion`` token ids, right-padded, with labels only on the completion tokens.

A completion's tokens are exactly the ids the policy sampled, its EOS token included when it ended on
one (the EOS is an action of the policy too), so the training forward scores the very tokens that
were generated: no detokenise/retokenise round trip. Row ``i·G + j`` is completion j of prompt i.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from algorithms.logprobs import IGNORE_INDEX


@dataclass
class RolloutTensors:
    """``input_ids``, ``attention_mask`` and ``labels`` [N, T] (labels = the completion's ids on its
    tokens, ``IGNORE_INDEX`` elsewhere); ``completion_lengths`` [N]; ``prefix``: the same rollouts laid
    out for a shared-prefix forward (:func:`prefix_tensors`), when asked for."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    completion_lengths: torch.Tensor
    prefix: PrefixTensors | None = None

    def to(self, device: torch.device | str) -> RolloutTensors:
        return RolloutTensors(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels)),
            self.completion_lengths,
            None if self.prefix is None else self.prefix.to(device),
        )

    @property
    def num_tokens(self) -> int:
        """Tokens a training forward runs (prompts and completions, padding excluded)."""
        return int(self.attention_mask.sum())


def rollout_tensors(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    with_prefix: bool = False,
) -> RolloutTensors:
    """``completions[i][j]``: the token ids of completion j of ``prompts[i]`` (EOS included when it ended
    on one; at least one token each). ``with_prefix``: also the shared-prefix layout."""
    if len(prompts) != len(completions):
        raise ValueError(f"rollout_tensors: {len(prompts)} prompts but {len(completions)} completion groups")
    rows = [(list(p), list(c)) for p, group in zip(prompts, completions) for c in group]
    if any(not c for _, c in rows):
        raise ValueError("rollout_tensors: every completion needs at least one token")
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        input_ids[i, :n] = torch.tensor(p + c, dtype=torch.long)
        labels[i, len(p) : n] = torch.tensor(c, dtype=torch.long)
        attention[i, :n] = 1
    lengths = torch.tensor([len(c) for _, c in rows], dtype=torch.long)
    prefix = prefix_tensors(prompts, completions, pad_id) if with_prefix else None
    return RolloutTensors(input_ids, attention, labels, lengths, prefix)


def last_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token rewards [N, T] with each row's sequence reward on its last masked token (PPO's sparse
    reward), 0 elsewhere."""
    m = mask.long()
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = (positions * m).amax(dim=1)
    out = torch.zeros(m.shape, dtype=torch.float32, device=m.device)
    has = m.any(dim=1)
    out[has.nonzero().squeeze(1), last[has]] = rewards.float().to(m.device)[has]
    return out


@dataclass
class PrefixTensors:
    """A group batch laid out for a shared-prefix forward (``algorithms/shared_prefix.py``):
    ``prefix_ids``/``prefix_mask`` [B, P]: each prompt without its last token, left-padded;
    ``step_ids`` [N, L]: ``[last prompt token, c_0, …, c_{L-2}]`` per row (the inputs that predict the
    completion), right-padded; ``completion_ids``/``completion_mask`` [N, L]: the completions,
    right-padded. Row ``i·G + j`` is completion j of prompt i."""

    prefix_ids: torch.Tensor
    prefix_mask: torch.Tensor
    step_ids: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor

    def to(self, device: torch.device | str) -> PrefixTensors:
        return PrefixTensors(*(getattr(self, f.name).to(device) for f in fields(self)))


def prefix_tensors(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[Sequence[int]]], pad_id: int
) -> PrefixTensors:
    """:class:`PrefixTensors` of ``completions[i][j]`` (G per prompt, at least one token each)."""
    groups = {len(g) for g in completions}
    if len(prompts) != len(completions) or len(groups) != 1:
        raise ValueError("prefix_tensors: one group of G completions per prompt, G the same for all")
    b, width = len(prompts), max(len(p) for p in prompts) - 1
    prefix_ids = torch.full((b, width), pad_id, dtype=torch.long)
    prefix_mask = torch.zeros((b, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        head = list(p)[:-1]
        if head:
            prefix_ids[i, width - len(head) :] = torch.tensor(head, dtype=torch.long)
            prefix_mask[i, width - len(head) :] = 1
    rows = [(list(p)[-1], list(c)) for p, group in zip(prompts, completions) for c in group]
    length = max(len(c) for _, c in rows)
    step_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    completion_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for r, (last, c) in enumerate(rows):
        step_ids[r, : len(c)] = torch.tensor([last, *c[:-1]], dtype=torch.long)
        completion_ids[r, : len(c)] = torch.tensor(c, dtype=torch.long)
        completion_mask[r, : len(c)] = 1
    return PrefixTensors(prefix_ids, prefix_mask, step_ids, completion_ids, completion_mask)
