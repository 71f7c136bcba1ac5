"""A STAND-IN judge for the bundled tiny-model demo, not a real judge.

A tiny model can't judge, and the demo has no large model. This stand-in reads the grading prompt that
:mod:`evaluation.mt_bench.judge_prompts` writes *with a reference answer* (Quartet's built-in
``single-math-v1`` prompts), and scores the reply by how many of the reference's content words it
contains: ``score = 1 + round(9 × recall)``, replied as ``Rating: [[score]]`` so that the real parsing
path (``RatingJudge``) runs. It only makes sense where every turn has a reference answer that states
the facts, as in ``data/mt_bench/question.jsonl``; use a real judge model (``judge=hf|vllm|openai_http``)
for real models.

For Quartet's pairwise prompts with a reference (``pair-math-v1``), it scores A's and B's replies the same
way and answers ``[[A]]``, ``[[B]]``, or ``[[C]]`` when the two scores are equal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "and",
        "or",
        "it",
        "its",
        "that",
        "this",
        "there",
        "do",
        "does",
        "people",
        "what",
        "which",
        "who",
        "how",
        "now",
        "from",
        "with",
        "by",
        "as",
    ]
)
_REFERENCE = re.compile(
    r"\[A reference answer to the latest message\]\n(.*?)\n\[End of the reference answer\]", re.S
)
_REPLY = re.compile(r"\[The assistant's reply to grade\]\n(.*?)\n\[End of the reply\]", re.S)
_REPLY_A = re.compile(r"\[Assistant A's reply\]\n(.*?)\n\[End of A's reply\]", re.S)
_REPLY_B = re.compile(r"\[Assistant B's reply\]\n(.*?)\n\[End of B's reply\]", re.S)

NAME = "standin_reference_overlap"


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def overlap_score(reply: str, reference: str) -> int:
    """1 + round(9 × the share of the reference's content words found in the reply)."""
    ref = content_words(reference)
    if not ref:
        return 1
    recall = len(ref & content_words(reply)) / len(ref)
    return 1 + round(9 * recall)


def standin_judge(prompts: Sequence[Sequence[dict[str, str]]]) -> list[str]:
    """Judge replies for chat prompts from ``judge_messages`` with a reference; a prompt without one gets
    a reply with no rating, which the rating judge counts as unparseable."""
    replies = []
    for messages in prompts:
        body = messages[-1]["content"]
        if _REPLY_A.search(body):
            replies.append(_pair_reply(body))
            continue
        ref, reply = _REFERENCE.search(body), _REPLY.search(body)
        if ref is None or reply is None:
            replies.append("The stand-in judge needs a reference answer; no rating.")
            continue
        replies.append(
            f"Stand-in judge: reference-word overlap. Rating: [[{overlap_score(reply.group(1), ref.group(1))}]]"
        )
    return replies


def _pair_reply(body: str) -> str:
    ref, a, b = _REFERENCE.search(body), _REPLY_A.search(body), _REPLY_B.search(body)
    if ref is None or a is None or b is None:
        return "The stand-in judge needs a reference answer; no verdict."
    score_a, score_b = overlap_score(a.group(1), ref.group(1)), overlap_score(b.group(1), ref.group(1))
    verdict = "A" if score_a > score_b else "B" if score_b > score_a else "C"
    return f"Stand-in judge: reference-word overlap A={score_a}, B={score_b}. [[{verdict}]]"
