"""Rewards of online RL (``reward=`` group, ``conf/reward/``): pure functions of a completion's text and
its question record, and their weighted sum.

- ``answer_match``: 1 when the answer extracted from the completion equals the gold, else 0, with the
  evaluation's own extraction and comparison (:mod:`reasoning.answers`, the ``extraction_mode`` of
  ``eval.py``), so that training and evaluation agree on what "correct" means;
- ``format``: 1 when the completion ends in an explicit answer statement (``The answer is N.``,
  ``#### N``, ``\\boxed{N}``: the ``strict`` extraction finds an answer of the record's type), else 0;
- ``grm``: the mean, over the completion's tokens, of RLMEC's GRM token rewards
  (:func:`algorithms.token_rewards.grm_token_rewards` of the GRM's teacher-forced probabilities, signed
  by answer match). The probabilities come from a caller-supplied scorer (a frozen GRM model).

The total is Σ_k w_k · reward_k over the configured weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from algorithms.token_rewards import grm_token_rewards
from reasoning.answers import EXTRACTION_MODES, extract_answer, is_correct
from reasoning.questions import ReasoningRecord

REWARDS = ("answer_match", "format", "grm")
#: Rewards that read the gold answer (``grm`` signs its token rewards by correctness).
NEEDS_GOLD = ("answer_match", "grm")

#: Per completion: the GRM's probability of each completion token (one 1-D tensor per completion).
GRMScorer = Callable[[Sequence[ReasoningRecord], Sequence[str]], list[torch.Tensor]]


def _extract(text: str, record: ReasoningRecord, mode: str) -> str | None:
    return extract_answer(
        text, record.answer_type, mode, num_choices=record.num_choices, choices=record.choices
    )


def answer_match_reward(text: str, record: ReasoningRecord, mode: str = "auto") -> float:
    """1.0 when the extracted answer is the record's gold (``reasoning.answers.is_correct``), else 0.0."""
    return 1.0 if is_correct(_extract(text, record, mode), record.gold) else 0.0


def format_reward(text: str, record: ReasoningRecord) -> float:
    """1.0 when the completion holds an explicit answer statement of the record's answer type."""
    return 1.0 if _extract(text, record, "strict") is not None else 0.0


def grm_sequence_reward(token_probs: torch.Tensor, correct: bool) -> float:
    """The mean GRM token reward over a completion (0.0 for an empty completion)."""
    if token_probs.numel() == 0:
        return 0.0
    return float(grm_token_rewards(token_probs, correct).mean())


def reward_problems(weights: Mapping[str, float], extraction_mode: str = "auto") -> list[str]:
    """Config problems of a ``reward`` (empty when fine)."""
    problems = [
        f"reward.weights.{k} is not a reward (known: {', '.join(REWARDS)})"
        for k in weights
        if k not in REWARDS
    ]
    if not any(float(w) != 0 for w in weights.values()):
        problems.append("reward.weights: give at least one reward a non-zero weight")
    if extraction_mode not in EXTRACTION_MODES:
        problems.append(
            f"reward.extraction_mode={extraction_mode!r} must be one of {', '.join(EXTRACTION_MODES)}"
        )
    return problems


def needs_gold(weights: Mapping[str, float]) -> bool:
    """True when a reward with a non-zero weight reads the gold answer."""
    return any(float(weights.get(k, 0)) != 0 for k in NEEDS_GOLD)


def score_completions(
    texts: Sequence[str],
    records: Sequence[ReasoningRecord],
    weights: Mapping[str, float],
    extraction_mode: str = "auto",
    grm_scorer: GRMScorer | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total [N], {name: [N]})``: each weighted reward of completion i (``texts[i]`` answering
    ``records[i]``) and their weighted sum, fp32. ``answer_match`` is always among the components
    (a metric even at weight 0) when the records have gold answers."""
    if len(texts) != len(records):
        raise ValueError(f"score_completions: {len(texts)} texts for {len(records)} records")
    active = {k: float(w) for k, w in weights.items() if float(w) != 0}
    parts: dict[str, torch.Tensor] = {}
    has_gold = all(r.gold for r in records)
    if has_gold:
        parts["answer_match"] = torch.tensor(
            [answer_match_reward(t, r, extraction_mode) for t, r in zip(texts, records)]
        )
    if "format" in active:
        parts["format"] = torch.tensor([format_reward(t, r) for t, r in zip(texts, records)])
    if "grm" in active:
        if grm_scorer is None:
            raise ValueError("score_completions: the grm reward needs a grm_scorer")
        probs = grm_scorer(records, texts)
        correct = parts["answer_match"].bool().tolist()
        parts["grm"] = torch.tensor([grm_sequence_reward(p, c) for p, c in zip(probs, correct)])
    total = torch.zeros(len(texts))
    for name, w in active.items():
        total = total + w * parts[name]
    return total, parts
