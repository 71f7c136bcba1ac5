"""Generation settings shared by every backend.

One frozen dataclass describes a generation request independently of the backend, so that the
same object can be logged with results, hashed into the sample-cache key, and translated into HF,
vLLM or OpenAI-style request fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one prompt.

    Attributes:
        n: number of completions (reasoning paths) per prompt; must be >= 1.
        temperature: softmax temperature; ``0`` means greedy (argmax) decoding.
        top_p: nucleus sampling mass in (0, 1]; ``1`` disables it.
        top_k: keep only the k most likely tokens; ``0`` disables it.
        max_new_tokens: upper bound on generated tokens per completion.
        stop: stop strings; a completion is cut just *before* the first occurrence of any of them
            (the stop string itself is not part of the returned text), and decoding of that
            completion ends as soon as one appears.
        seed: makes sampling reproducible; ``None`` uses the global RNG.
        ignore_eos: keep generating past EOS (benchmarks use it to force equal lengths).
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = 0
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        # Accept a list for `stop` (e.g. from a YAML config) but store a tuple so the object stays hashable.
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        problems = []
        if not isinstance(self.n, int) or self.n < 1:
            problems.append(f"n (number of paths per prompt) must be an integer >= 1, got {self.n!r}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0 = off), got {self.top_k!r}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append(f"stop strings must be non-empty strings, got {list(self.stop)!r}")
        if problems:
            raise ValueError("Invalid SamplingParams: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic argmax."""
        return self.temperature == 0.0

    def replace(self, **changes: Any) -> SamplingParams:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view, used in results files and cache keys."""
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d

    def cache_fields(self) -> dict[str, Any]:
        """The fields that change *what* is sampled, without ``n``.

        ``n`` is left out on purpose: a cache entry holding more paths than requested can serve a
        smaller request (the first ``n`` paths are used).
        """
        d = self.to_dict()
        d.pop("n")
        if self.greedy:
            # Greedy output does not depend on these.
            for k in ("top_p", "top_k", "seed"):
                d.pop(k)
        return d
