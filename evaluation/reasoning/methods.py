"""Greedy chain-of-thought, Self-Consistency (:func:`self_consistency`) and Self-Agreement
(:func:`self_agreement`) over one cached set of paths.

- Greedy CoT: one greedy decode of the CoT prompt.
- Self-Consistency (Wang et al. 2022, arXiv 2203.11171): sample m paths, extract each path's answer
  and take the majority; ties go to the answer seen first, unparsed paths do not vote.
- Self-Agreement (Lin et al., arXiv 2311.08154): put the question and the m paths into one more
  prompt asking which answer most paths agree on, decode it greedily with the same model, and score
  that output with the extractor (which is used only to score, never to select).

``maj@k`` / ``agree@k`` use the first k of the m cached paths, so every k comes from one sampling run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from inference.backends.base import Completion, GenerationBackend
from inference.generation_cache import ProgressFn, generate_cached
from inference.sample_cache import SampleCache
from inference.sampling import SamplingParams
from reasoning.prompts import PromptSettings, build_agreement_prompt
from reasoning.questions import ReasoningRecord

#: Called with the number of questions just finished (progress bars).


@dataclass
class VoteResult:
    """Outcome of a majority vote."""

    answer: str | None
    votes: dict[str, int]
    num_parsed: int


def majority_vote(answers: Sequence[str | None]) -> VoteResult:
    """Most frequent non-None answer; ties are broken by first occurrence; None if nothing parsed."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return VoteResult(None, {}, 0)
    top = max(counts.values())
    first = next(a for a in answers if a is not None and counts[a] == top)
    ordered = {a: counts[a] for a in dict.fromkeys(a for a in answers if a is not None)}
    return VoteResult(first, ordered, sum(counts.values()))


def self_consistency(answers: Sequence[str | None], k: int) -> VoteResult:
    """SC answer from the first ``k`` paths' extracted answers (``maj@k``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > len(answers):
        raise ValueError(f"k={k} exceeds the {len(answers)} available paths")
    return majority_vote(answers[:k])


def self_agreement(
    backend: GenerationBackend,
    cache: SampleCache,
    records: Sequence[ReasoningRecord],
    paths: Sequence[Sequence[str]],
    k: int,
    settings: PromptSettings,
    params: SamplingParams,
    chunk_size: int = 32,
    progress: ProgressFn | None = None,
) -> list[list[Completion]]:
    """Self-Agreement's selection step (``agree@k``; Lin et al., arXiv 2311.08154, Sec. 3).

    For each question, the same model reads the question and its first ``k`` sampled paths and is
    asked, greedily (``params``), which answer most of them agree on. Its output is the method's
    answer; the extractor only scores it, it never selects. Calls go through the sample cache under
    kind ``agreement``, so a rerun reuses them. Returns one completion group per question.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    short = [r.id for r, p in zip(records, paths) if len(p) < k]
    if short:
        raise ValueError(f"k={k} exceeds the available paths of question(s) {short[:3]}")
    items = [(r.id, build_agreement_prompt(r, list(p[:k]), settings)) for r, p in zip(records, paths)]
    return generate_cached(backend, cache, "agreement", items, params, chunk_size, progress)
