"""Shared inference layer, used by eval.py, generate.py stages and training callbacks alike: generation
backends (HF, vLLM, OpenAI-compatible HTTP), sampling settings, chat templating, the KV cache,
stopping and the resumable sample cache (answer extraction is in ``reasoning/answers.py``).

Typical use::

    from inference import HFBackend, SamplingParams

    backend = HFBackend.from_pretrained("path/to/model")
    completions = backend.generate(["2+2="], SamplingParams(max_new_tokens=8))

The reasoning methods (greedy CoT, Self-Consistency, Self-Agreement) and their evaluator live in
``evaluation/reasoning/``.

Names are imported lazily, so ``import inference.sampling`` does not pull in torch/transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Completion": "inference.backends.base",
    "GenerationBackend": "inference.backends.base",
    "Prompt": "inference.backends.base",
    "group_token_cost": "inference.backends.base",
    "build_backend": "inference.backends.factory",
    "HFBackend": "inference.backends.hf",
    "OpenAIHTTPBackend": "inference.backends.openai_http",
    "VLLMBackend": "inference.backends.vllm",
    "ChatTemplateMissingError": "inference.chat",
    "apply_chat_template": "inference.chat",
    "count_tokens": "inference.chat",
    "encode_prompt": "inference.chat",
    "SampleCache": "inference.sample_cache",
    "SamplingParams": "inference.sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
