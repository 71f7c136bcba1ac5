"""Shared inference layer: backends, generation settings, chat templating, answer extraction and the
reasoning methods (greedy CoT, Self-Consistency, Self-Agreement) with their evaluator.

Typical use::

    from inference import HFBackend, evaluate_reasoning, load_reasoning_records, write_results

    backend = HFBackend.from_pretrained("path/to/model")
    records = load_reasoning_records("data/reasoning/test.jsonl")
    results = evaluate_reasoning(backend, records, methods=["greedy", "sc", "sa"], ks=[1, 3, 5])
    write_results(results, "outputs/eval")

Names are imported lazily, so ``import inference.extraction`` does not pull in torch/transformers.
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
    "evaluate_reasoning": "inference.evaluator",
    "flat_metrics": "inference.evaluator",
    "print_results_table": "inference.evaluator",
    "write_results": "inference.evaluator",
    "extract_answer": "inference.extraction",
    "extract_choice": "inference.extraction",
    "extract_number": "inference.extraction",
    "extract_yes_no": "inference.extraction",
    "PromptSettings": "inference.prompts",
    "build_agreement_prompt": "inference.prompts",
    "build_cot_prompt": "inference.prompts",
    "majority_vote": "inference.reasoning_methods",
    "self_consistency": "inference.reasoning_methods",
    "ReasoningDataError": "inference.reasoning_records",
    "ReasoningRecord": "inference.reasoning_records",
    "load_reasoning_records": "inference.reasoning_records",
    "SampleCache": "inference.sample_cache",
    "SamplingParams": "inference.sampling",
    "ReasoningEvalSpec": "inference.reasoning_spec",
    "merge_results": "inference.scoring",
    "score_rows": "inference.scoring",
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
