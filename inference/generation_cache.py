"""Resumable generation: any backend behind the :class:`~inference.sample_cache.SampleCache`.

Every stage of ``generate.py`` (and the reasoning eval) generates through this module, so that a run
killed mid-way and started again continues where it stopped:

- :func:`generate_cached` looks every request up in the cache by *(kind, id, model id, sampling
  settings, prompt)*, sends only the missing prompts to the backend, in chunks, and appends each chunk
  to the cache file (one flushed write) as soon as it is done.
- :class:`CachedGenerator` is the stage-facing form: a callable from prompts (chat messages, raw text,
  or :class:`~inference.chat.NextTurn`) to one reply each, bound to one backend, one
  ``SamplingParams`` and one cache. It counts what came from the cache and what was generated.

How a stage uses it (``capo_negatives`` does; ``rlmec_*`` and ``parrot_rollout`` are meant to)::

    cache = open_cache(cfg.stage.cache)                # e.g. <run folder>/cache/generations.jsonl
    gen = build_generator(cfg.stage.generator, "stage.generator", cache, kind="my_stage/answer")
    replies = gen(prompts)                             # cached prompts are not generated again
    ... build the records in input order ...
    write_jsonl_atomic(cfg.stage.output, records)      # the output appears once, complete

Because cached replies are returned verbatim and the records are built from them in a fixed order,
the output of a resumed run equals an uninterrupted run's byte for byte. Rerun a stopped stage with
``python generate.py resume_dir=<its run folder>`` (the same folder, hence the same cache), or point
``stage.cache`` at a file of your choice.

The cache key holds the model id (for HF models, the path plus a weight fingerprint), so retrained
weights never reuse stale replies; it holds every sampling setting that changes what is sampled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from inference.backends.base import Completion, GenerationBackend, Prompt
from inference.sample_cache import SampleCache, SampleCacheError, cache_key
from inference.sampling import SamplingParams

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]


def open_cache(path: str | os.PathLike[str] | None, what: str = "stage.cache") -> SampleCache:
    """The sample cache at ``path`` (in memory only when None). A corrupt line other than a
    half-written last one (which is dropped: the crash case) is a :class:`~utils.errors.DataError`
    naming ``what``, the file and the line."""
    from utils.errors import DataError

    try:
        return SampleCache(path)
    except SampleCacheError as e:
        raise DataError(f"{what}: {e}") from None


def generate_cached(
    backend: GenerationBackend,
    cache: SampleCache,
    kind: str,
    items: Sequence[tuple[str, Prompt]],
    params: SamplingParams,
    chunk_size: int = 32,
    progress: ProgressFn | None = None,
) -> list[list[Completion]]:
    """``params.n`` completions for each ``(id, prompt)`` item, from the cache where present.

    Missing items are generated in chunks of ``chunk_size`` prompts; each chunk is appended to the
    cache as soon as it is done, so an interrupted run resumes where it stopped. Items with the same
    key (same id and prompt) are generated once. ``progress`` is called with the number of items
    finished since the last call.
    """
    model_id = backend.model_id  # read once: for HF backends it hashes weights
    keys = [cache_key(kind, qid, model_id, params, prompt) for qid, prompt in items]
    found: dict[str, list[Completion]] = {}
    for k in dict.fromkeys(keys):
        hit = cache.get(k, params.n)
        if hit is not None:
            found[k] = hit
    done = sum(k in found for k in keys)
    if progress is not None and done:
        progress(done)
    first_index: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in found:
            first_index.setdefault(k, i)
    todo = list(first_index.values())
    for start in range(0, len(todo), max(1, chunk_size)):
        idx = todo[start : start + max(1, chunk_size)]
        groups = backend.generate([items[i][1] for i in idx], params)
        if len(groups) != len(idx) or any(len(g) != params.n for g in groups):
            raise RuntimeError(
                f"{type(backend).__name__}.generate returned {[len(g) for g in groups]} completions for "
                f"{len(idx)} prompts with n={params.n}"
            )
        cache.put_many(
            [
                {
                    "key": keys[i],
                    "kind": kind,
                    "qid": items[i][0],
                    "model": model_id,
                    "params": params.cache_fields(),
                    "prompt": items[i][1],
                    "completions": g,
                }
                for i, g in zip(idx, groups)
            ]
        )
        for i, g in zip(idx, groups):
            found[keys[i]] = g
        if progress is not None:
            chunk_keys = {keys[i] for i in idx}
            progress(sum(k in chunk_keys for k in keys))
    return [list(found[k]) for k in keys]


class CachedGenerator:
    """A stage's model: prompts in, one reply text per prompt out, through a backend and a cache.

    Args:
        backend: any :class:`GenerationBackend` (HF, vLLM, OpenAI-compatible HTTP, a test fake).
        params: the sampling settings of every request.
        cache: where replies are looked up and appended; ``None`` keeps them in memory only.
        kind: a name for this use of the model (e.g. ``"capo_negatives/rejected"``), part of the key,
            so two roles with the same model and prompt never share entries.
        chunk_size: prompts per backend call (each call's results are appended to the cache).

    Attributes:
        cached: prompts answered without a backend call so far (from the cache, or a repeat of an
            equal prompt in the same call).
        generated: prompts sent to the backend so far.
        backend_calls: calls to ``backend.generate`` so far.
    """

    def __init__(
        self,
        backend: GenerationBackend,
        params: SamplingParams,
        cache: SampleCache | None = None,
        kind: str = "chat",
        chunk_size: int = 32,
    ) -> None:
        self.backend, self.params = backend, params
        self.cache = cache if cache is not None else SampleCache(None)
        self.kind, self.chunk_size = kind, int(chunk_size)
        self.cached = self.generated = self.backend_calls = 0

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(self, prompts: Sequence[Prompt], ids: Sequence[str] | None = None) -> list[list[Completion]]:
        """``params.n`` completions per prompt. ``ids`` (default: all empty) join the cache key; leave
        them out to share replies between equal prompts."""
        if not prompts:
            return []
        ids = list(ids) if ids is not None else [""] * len(prompts)
        if len(ids) != len(prompts):
            raise ValueError(f"{len(ids)} ids for {len(prompts)} prompts")
        calls = _CallCounter(self.backend)
        out = generate_cached(
            calls, self.cache, self.kind, list(zip(ids, prompts)), self.params, self.chunk_size
        )
        self.backend_calls += calls.calls
        self.generated += calls.prompts
        self.cached += len(prompts) - calls.prompts
        return out

    def __call__(self, prompts: Sequence[Prompt], ids: Sequence[str] | None = None) -> list[str]:
        """The first completion's text for each prompt."""
        return [group[0].text for group in self.generate(prompts, ids)]

    def counts(self) -> dict[str, int]:
        """``cached``, ``generated`` and ``backend_calls`` so far (for a stage's summary)."""
        return {"cached": self.cached, "generated": self.generated, "backend_calls": self.backend_calls}

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "sampling": self.params.to_dict(), "kind": self.kind}


class _CallCounter(GenerationBackend):
    """Counts the calls and prompts that reach ``backend`` (and otherwise passes them through)."""

    def __init__(self, backend: GenerationBackend) -> None:
        self.backend, self.calls, self.prompts = backend, 0, 0

    @property
    def model_id(self) -> str:  # type: ignore[override]
        return self.backend.model_id

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.calls += 1
        self.prompts += len(prompts)
        return self.backend.generate(prompts, params)


def sampling_params(cfg: Mapping[str, Any], what: str) -> SamplingParams:
    """The ``sampling`` block of a generator config as :class:`SamplingParams`, or ``ConfigError``
    naming ``<what>.sampling`` (so a caller can check it before any generation starts)."""
    from utils.errors import ConfigError

    try:
        return SamplingParams(**dict(cfg.get("sampling") or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError([f"{what}.sampling: {e}"]) from None


def build_generator(
    cfg: Mapping[str, Any],
    what: str = "stage.generator",
    cache: SampleCache | None = None,
    kind: str = "chat",
    chunk_size: int = 32,
) -> CachedGenerator:
    """A :class:`CachedGenerator` from config: ``backend`` (``hf`` | ``vllm`` | ``openai_http``), the
    backend's own keys (``path``, ``dtype``, ``device``, ``batch_size``, ``base_url``, ...), and
    ``sampling`` (``SamplingParams`` fields: ``temperature``, ``top_p``, ``max_new_tokens``, ``seed``,
    ``stop``, ...). ``what`` names the config key in error messages."""
    from inference.backends.factory import build_backend
    from utils.errors import ConfigError

    cfg = dict(cfg)
    name = cfg.pop("backend", "hf")
    params = sampling_params({"sampling": cfg.pop("sampling", None)}, what)
    if name in ("hf", "vllm") and not cfg.get("path"):
        raise ConfigError([f"{what}.path is required: the model folder (or hub id) to generate with"])
    kwargs = {k: v for k, v in cfg.items() if v is not None}
    try:
        backend = build_backend(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError([f"{what}: {e}"]) from None
    return CachedGenerator(backend, params, cache, kind=kind, chunk_size=chunk_size)
