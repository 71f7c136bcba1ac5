"""Judges: a model's reply parsed into a verdict, written once for every stage and eval.

A judge sends prompts (which the caller writes: the MT-Bench grading prompt, the CaPO
context-dependence question, ...) to a text generator and parses each reply:

- :class:`RatingJudge`: a 1-10 score in FastChat's single-answer style, ``Rating: [[7]]``
  (:func:`parse_rating`);
- :class:`YesNoJudge`: yes / no (:func:`parse_yes_no`);
- :class:`PairJudge`: which of two replies is better in FastChat's pairwise style, ``[[A]]``, ``[[B]]``
  or ``[[C]]`` for a tie (:func:`parse_pair_verdict`).

The generator is any callable from prompts to reply texts; :class:`~inference.generation_cache.CachedGenerator`
puts every backend (HF, vLLM, OpenAI-compatible HTTP) behind that interface, with the sample cache,
so a rerun never pays twice (:meth:`Judge.from_backend`, :func:`build_judge`).

A reply that cannot be parsed is a *failure*: its verdict's ``value`` is None, the judge's
``counts["unparseable"]`` goes up, and it never enters a mean (:func:`mean_score`). It is never
read as 0 or as "no".
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inference.backends.base import GenerationBackend, Prompt
from inference.sample_cache import SampleCache
from inference.sampling import SamplingParams

#: Prompts in, one reply text per prompt out (a ``CachedGenerator``, or a plain function in tests).
TextGenerator = Callable[[Sequence[Prompt]], list[str]]

#: The failure value of FastChat's score files; :meth:`Verdict.score_or` gives it for files that need one.
FASTCHAT_FAILED_SCORE = -1.0

_RATING = re.compile(r"\[\[\s*([+-]?\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")
_BRACKET_YES_NO = re.compile(r"\[\[\s*(yes|no)\s*\]\]", re.IGNORECASE)
_LEADING_YES_NO = re.compile(
    r"^[\s*_#>\"'`]*(?:(?:final\s+)?(?:answer|verdict|judg(?:e)?ment|decision)\s*[:\-]\s*[\s*_\"'`]*)?(yes|no)\b",
    re.IGNORECASE,
)
_PAIR_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_YES_NO_WORD = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_rating(text: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """The ``[[rating]]`` in a judge's reply: ``[[7]]``, ``[[7.5]]``, ``Rating: [[10]]``,
    ``[[ 8 / 10 ]]``.

    None (unparseable) when there is no ``[[number]]``, when there are two different ones, or when the
    number lies outside ``[low, high]``. The same rating repeated counts once.
    """
    values = {float(m.group(1)) for m in _RATING.finditer(text or "")}
    if len(values) != 1:
        return None
    (value,) = values
    return value if low <= value <= high else None


def parse_pair_verdict(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from a pairwise judge's ``[[A]]``, ``[[B]]`` or ``[[C]]``; None
    (unparseable, FastChat's ``"error"``) when there is none or two different ones. FastChat takes the
    first of A, B, C found; a reply naming two different verdicts is read here as no verdict at all."""
    found = set(_PAIR_VERDICT.findall(text or ""))
    if len(found) != 1:
        return None
    (verdict,) = found
    return "tie" if verdict == "C" else verdict


def parse_yes_no(text: str) -> bool | None:
    """True for yes, False for no, None when the reply does not say which.

    In order: a bracketed verdict (``[[yes]]``; two different ones are unparseable); a reply that
    opens with yes/no (``"Yes, it refers to..."``, ``"**No**."``, ``"Answer: no"``); an explicit
    statement (``"the answer is no"``); else the yes/no words of the reply, if they all agree.
    """
    from reasoning.answers import extract_yes_no

    text = text or ""
    bracketed = {m.group(1).lower() for m in _BRACKET_YES_NO.finditer(text)}
    if bracketed:
        return None if len(bracketed) > 1 else bracketed == {"yes"}
    if m := _LEADING_YES_NO.match(text):
        return m.group(1).lower() == "yes"
    stated = extract_yes_no(text, mode="strict")
    if stated is not None:
        return stated == "yes"
    words = {w.lower() for w in _YES_NO_WORD.findall(text)}
    return words == {"yes"} if len(words) == 1 else None


@dataclass(frozen=True)
class Verdict:
    """One judgement: ``value`` is the parsed verdict (a score, or True/False), None when the reply
    could not be parsed; ``text`` is the judge's reply."""

    value: float | bool | str | None
    text: str

    @property
    def ok(self) -> bool:
        return self.value is not None

    def score_or(self, failed: float = FASTCHAT_FAILED_SCORE) -> float:
        """The score, or ``failed`` for an unparseable reply (for file formats that need a number;
        never average these)."""
        return failed if self.value is None else float(self.value)


def mean_score(verdicts: Sequence[Verdict]) -> tuple[float | None, int]:
    """The mean over parsed verdicts (None if there are none) and the number of failures."""
    scores = [float(v.value) for v in verdicts if v.value is not None]
    failed = len(verdicts) - len(scores)
    return (sum(scores) / len(scores) if scores else None), failed


class Judge(ABC):
    """Sends prompts to a generator and parses each reply with :meth:`parse`.

    Attributes:
        counts: ``judged`` (replies parsed or not) and ``unparseable`` (failures), over this judge's
            lifetime.
    """

    kind = "judge"

    def __init__(self, generator: TextGenerator) -> None:
        self.generator = generator
        self.counts: Counter = Counter(judged=0, unparseable=0)

    @abstractmethod
    def parse(self, text: str) -> float | bool | str | None:
        """The verdict in ``text``, or None when there is none (a failure)."""

    def __call__(self, prompts: Sequence[Prompt]) -> list[Verdict]:
        """One verdict per prompt, in order."""
        replies = self.generator(list(prompts))
        if len(replies) != len(prompts):
            raise RuntimeError(
                f"the judge's generator returned {len(replies)} replies for {len(prompts)} prompts"
            )
        verdicts = [Verdict(self.parse(r), r) for r in replies]
        self.counts["judged"] += len(verdicts)
        self.counts["unparseable"] += sum(not v.ok for v in verdicts)
        return verdicts

    @classmethod
    def from_backend(
        cls,
        backend: GenerationBackend,
        params: SamplingParams,
        cache: SampleCache | None = None,
        chunk_size: int = 32,
        **kwargs: Any,
    ) -> Judge:
        """This judge on any backend, its replies cached (``kind`` ``judge/<rating|yes_no>``)."""
        from inference.generation_cache import CachedGenerator

        gen = CachedGenerator(backend, params, cache, kind=f"judge/{cls.kind}", chunk_size=chunk_size)
        return cls(gen, **kwargs)

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.generator, "describe", None)
        return {"judge": self.kind, **(describe() if callable(describe) else {})}


class RatingJudge(Judge):
    """A score in ``[low, high]`` (default 1-10) from ``[[rating]]`` (:func:`parse_rating`)."""

    kind = "rating"

    def __init__(self, generator: TextGenerator, low: float = 1.0, high: float = 10.0) -> None:
        super().__init__(generator)
        self.low, self.high = low, high

    def parse(self, text: str) -> float | None:
        return parse_rating(text, self.low, self.high)


class YesNoJudge(Judge):
    """True (yes) or False (no) (:func:`parse_yes_no`)."""

    kind = "yes_no"

    def parse(self, text: str) -> bool | None:
        return parse_yes_no(text)


class PairJudge(Judge):
    """``"A"``, ``"B"`` or ``"tie"`` (:func:`parse_pair_verdict`)."""

    kind = "pair"

    def parse(self, text: str) -> str | None:
        return parse_pair_verdict(text)


JUDGES: dict[str, type[Judge]] = {"rating": RatingJudge, "yes_no": YesNoJudge, "pair": PairJudge}


def build_judge(
    kind: str,
    cfg: Mapping[str, Any],
    what: str = "judge",
    cache: SampleCache | None = None,
    chunk_size: int = 32,
) -> Judge:
    """A judge of ``kind`` (``rating`` | ``yes_no`` | ``pair``) over the generator that ``cfg`` describes (the keys
    of :func:`~inference.generation_cache.build_generator`: ``backend``, ``path`` / ``base_url`` ...,
    ``sampling``)."""
    from inference.generation_cache import build_generator

    if kind not in JUDGES:
        raise ValueError(f"unknown judge kind {kind!r}; choose one of {list(JUDGES)}")
    gen = build_generator(cfg, what, cache, kind=f"judge/{kind}", chunk_size=chunk_size)
    return JUDGES[kind](gen)
