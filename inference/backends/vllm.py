"""Generation with vLLM's offline engine (optional dependency).

``vllm`` is imported only when a :class:`VLLMBackend` is constructed, so the rest of the package works
without it; constructing one without vLLM installed raises :class:`VLLMUnavailableError` saying so.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from inference.backends.base import Completion, GenerationBackend, Prompt
from inference.chat import NextTurn, encode_prompt
from inference.sampling import SamplingParams
from inference.stopping import truncate_at_stop


class VLLMUnavailableError(ImportError):
    """vLLM is not installed in this environment."""


def vllm_available() -> bool:
    """True when the ``vllm`` package can be imported."""
    return importlib.util.find_spec("vllm") is not None


class VLLMBackend(GenerationBackend):
    """Batched generation with ``vllm.LLM``.

    Chat prompts are rendered with the model tokenizer's chat template (the same rendering the HF
    backend uses) and sent as token ids, so both backends see identical prompt tokens.

    Args:
        model_path: a model folder or name vLLM can load.
        engine_kwargs: passed to ``vllm.LLM`` (``tensor_parallel_size``, ``dtype``,
            ``gpu_memory_utilization``, ...).
    """

    def __init__(self, model_path: str, chat_template: str | None = None, **engine_kwargs: Any) -> None:
        if not vllm_available():
            raise VLLMUnavailableError(
                "The vLLM backend needs the 'vllm' package, which is not installed here. Install vllm "
                "(GPU machines), or use the 'hf' or 'openai_http' backend instead."
            )
        import vllm

        self._vllm = vllm
        self.llm = vllm.LLM(model=model_path, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        if chat_template:  # prompts are rendered here (encode_prompt), so vLLM sees the override's tokens
            self.tokenizer.chat_template = chat_template
        self.model_id = str(model_path)
        self.engine_kwargs = dict(engine_kwargs)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine_kwargs": {k: str(v) for k, v in self.engine_kwargs.items()}}

    def to_vllm_params(self, params: SamplingParams) -> Any:
        """The equivalent ``vllm.SamplingParams``."""
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=None if params.greedy else params.seed,
            ignore_eos=params.ignore_eos,
        )

    def encode(self, prompt: Prompt | NextTurn) -> list[int]:
        """Token ids of a prompt, exactly as the HF backend encodes it (:func:`inference.chat.encode_prompt`:
        the chat template for message lists and :class:`NextTurn`, the tokenizer's special tokens for raw
        strings)."""
        return encode_prompt(self.tokenizer, prompt)

    @staticmethod
    def finish_reason(output: Any, stop_hit: bool) -> str:
        """Quartet's finish reason of one vLLM ``CompletionOutput``.

        vLLM says ``"stop"`` both for a stop string (``stop_reason`` is that string) and for an end token
        (``stop_reason`` is ``None`` for the tokenizer's EOS, or the token id for the generation config's
        other end tokens); ``"length"`` when ``max_tokens`` ran out.
        """
        if stop_hit or isinstance(output.stop_reason, str):
            return "stop"
        if output.finish_reason == "stop":
            return "eos"
        return "length"

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        # Every prompt goes as token ids, so vLLM adds nothing (no second BOS after a rendered template) and
        # both backends feed the model the same tokens.
        inputs = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        outputs = self.llm.generate(inputs, self.to_vllm_params(params), use_tqdm=False)
        results: list[list[Completion]] = []
        for out in outputs:
            n_prompt = len(out.prompt_token_ids or [])
            group = []
            for o in out.outputs:  # in index order: vLLM places each of the n outputs at its index
                text, hit = truncate_at_stop(o.text, params.stop)
                group.append(Completion(text, n_prompt, len(o.token_ids), self.finish_reason(o, hit)))
            results.append(group)
        return results

    def close(self) -> None:
        """Drop the engine (its worker process exits with it)."""
        self.__dict__.pop("llm", None)
