"""One reasoning-evaluation setup (methods, m, ks, decoding, prompts), built from plain config dicts.

``eval.py`` (its ``decoding`` and ``prompt`` config nodes) and the training callback
(``callbacks/reasoning_eval_callback.py``) describe an evaluation with the same keys; :meth:`ReasoningEvalSpec.
from_config` turns them into the arguments of :func:`evaluation.reasoning.evaluator.evaluate_reasoning` and
reports every invalid value at once. Defaults follow METHODS.md for Self-Agreement (arXiv 2311.08154):
m = 5 paths at temperature 0.7, greedy agreement decoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.reasoning.evaluator import METHODS, evaluate_reasoning
from inference.backends.base import GenerationBackend
from inference.sample_cache import SampleCache
from inference.sampling import SamplingParams
from reasoning.answers import EXTRACTION_MODES
from reasoning.prompts import PromptSettings
from reasoning.questions import ReasoningRecord

#: Method names accepted in configs, with their short evaluator names.
METHOD_ALIASES = {
    "greedy": "greedy",
    "sc": "sc",
    "self_consistency": "sc",
    "sa": "sa",
    "self_agreement": "sa",
}
#: ``method`` keys that are decoding settings of the sampled paths.
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "seed")
#: ``method`` keys that are prompt settings (the agreement prompt belongs to the method).
AGREEMENT_KEYS = ("agreement_template", "agreement_path_template", "agreement_format_instructions")
#: Other ``method`` keys.
METHOD_KEYS = (
    "name",
    "methods",
    "num_paths",
    "ks",
    "greedy_max_new_tokens",
    "agreement_max_new_tokens",
    "optimized_metric",
    *SAMPLING_KEYS,
    *AGREEMENT_KEYS,
)
PROMPT_KEYS = tuple(f.name for f in dataclasses.fields(PromptSettings))
#: Decoding of the sampled paths when the config does not say (METHODS.md: temperature 0.7).
PATH_DEFAULTS = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 256}


class SpecError(ValueError):
    """Invalid evaluation settings; ``problems`` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class ReasoningEvalSpec:
    """Everything :func:`evaluate_reasoning` needs besides the backend, the questions and the cache."""

    methods: tuple[str, ...] = METHODS
    num_paths: int = 5
    ks: tuple[int, ...] = (5,)
    extraction_mode: str = "auto"
    prompt: PromptSettings = field(default_factory=PromptSettings)
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(n=5, temperature=0.7, top_p=1.0, max_new_tokens=256, seed=0)
    )
    greedy_max_new_tokens: int | None = None
    agreement_max_new_tokens: int | None = None
    fewshot_pool: tuple[ReasoningRecord, ...] = ()

    @property
    def headline(self) -> str:
        """The method key a run is judged by: ``sa@max(ks)``, else ``sc@max(ks)``, else ``greedy``."""
        for name in ("sa", "sc"):
            if name in self.methods:
                return f"{name}@{max(self.ks)}"
        return "greedy"

    def run(
        self,
        backend: GenerationBackend,
        records: Sequence[ReasoningRecord],
        cache: SampleCache | str | Path | None = None,
        chunk_size: int = 32,
        progress: bool = False,
    ) -> dict[str, Any]:
        """:func:`evaluate_reasoning` with these settings."""
        return evaluate_reasoning(
            backend,
            records,
            methods=list(self.methods),
            ks=list(self.ks),
            num_paths=self.num_paths,
            extraction_mode=self.extraction_mode,
            prompt_settings=self.prompt,
            sampling=self.sampling,
            greedy_max_new_tokens=self.greedy_max_new_tokens,
            agreement_max_new_tokens=self.agreement_max_new_tokens,
            fewshot_pool=self.fewshot_pool,
            cache_path=cache,
            chunk_size=chunk_size,
            progress=progress,
        )

    @classmethod
    def from_config(
        cls,
        method: Mapping[str, Any],
        prompt: Mapping[str, Any] | None = None,
        extraction_mode: str = "auto",
        seed: int | None = 0,
        fewshot_pool: Sequence[ReasoningRecord] = (),
        where: tuple[str, str] = ("decoding", "prompt"),
    ) -> ReasoningEvalSpec:
        """Build from a ``method`` node (methods, num_paths, ks, decoding, agreement template) and a
        ``prompt`` node (:class:`PromptSettings` fields: chat, the scenario grid, few-shot...).

        ``method.ks`` defaults to ``[num_paths]``; ``method.seed`` to ``seed``. ``where`` names the two
        nodes in error messages.

        Raises:
            SpecError: listing every invalid or unknown setting.
        """
        m_name, p_name = where
        method, prompt = dict(method), dict(prompt or {})
        problems = [
            f"{m_name}.{k} is not a decoding setting (known: {', '.join(METHOD_KEYS)})"
            for k in method
            if k not in METHOD_KEYS
        ]
        problems += [
            f"{p_name}.{k} is not a prompt setting (known: {', '.join(PROMPT_KEYS)})"
            for k in prompt
            if k not in PROMPT_KEYS
        ]
        names = method.get("methods") or []
        if isinstance(names, str):
            names = [names]
        unknown = [n for n in names if n not in METHOD_ALIASES]
        if unknown or not names:
            problems.append(
                f"{m_name}.methods={list(names)} must be a non-empty list of {sorted(set(METHOD_ALIASES))}"
            )
        methods = tuple(dict.fromkeys(METHOD_ALIASES[n] for n in names if n in METHOD_ALIASES))
        m = method.get("num_paths", 5)
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            problems.append(
                f"{m_name}.num_paths (m, sampled paths per question) must be an integer >= 1, got {m!r}"
            )
            m = None
        ks = method.get("ks")
        ks = [m] if ks is None and m is not None else list(ks or [])
        bad_k = [
            k for k in ks if isinstance(k, bool) or not isinstance(k, int) or m is None or not 1 <= k <= m
        ]
        if m is not None and (not ks or bad_k):
            problems.append(f"{m_name}.ks={ks} must be integers with 1 <= k <= num_paths={m}")
        if extraction_mode not in EXTRACTION_MODES:
            problems.append(f"extraction_mode={extraction_mode!r} must be one of {list(EXTRACTION_MODES)}")
        sampling_kwargs = {k: method[k] for k in SAMPLING_KEYS if k in method and method[k] is not None}
        sampling_kwargs.setdefault("seed", seed)
        for k, v in PATH_DEFAULTS.items():
            sampling_kwargs.setdefault(k, v)
        sampling = None
        try:
            sampling = SamplingParams(n=m or 1, **sampling_kwargs)
        except (TypeError, ValueError) as e:
            problems.append(f"{m_name}: {e}")
        for k in ("greedy_max_new_tokens", "agreement_max_new_tokens"):
            v = method.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                problems.append(f"{m_name}.{k}={v!r} must be a positive integer (or null)")
        settings_kwargs = {k: v for k, v in prompt.items() if k in PROMPT_KEYS and v is not None}
        settings_kwargs.update({k: method[k] for k in AGREEMENT_KEYS if method.get(k) is not None})
        settings = None
        try:
            settings = PromptSettings(**settings_kwargs)
        except (TypeError, ValueError) as e:
            problems.append(f"{p_name}: {e}")
        if problems:
            raise SpecError(problems)
        assert sampling is not None and settings is not None and m is not None
        return cls(
            methods=methods,
            num_paths=m,
            ks=tuple(sorted(set(ks))),
            extraction_mode=extraction_mode,
            prompt=settings,
            sampling=sampling,
            greedy_max_new_tokens=method.get("greedy_max_new_tokens"),
            agreement_max_new_tokens=method.get("agreement_max_new_tokens"),
            fewshot_pool=tuple(fewshot_pool),
        )
