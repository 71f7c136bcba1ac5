"""The vLLM backend's reading of vLLM's outputs, with stand-in outputs (vLLM itself runs in the vLLM tier,
`make test-vllm`): finish reasons, cut text, token counts, n completions in order."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from inference.backends.vllm import VLLMBackend
from inference.sampling import SamplingParams


def output(text: str, n_tokens: int, finish: str, stop_reason: object = None) -> SimpleNamespace:
    return SimpleNamespace(
        text=text, token_ids=list(range(n_tokens)), finish_reason=finish, stop_reason=stop_reason
    )


@pytest.mark.parametrize(
    ("finish", "stop_reason", "hit", "expected"),
    [
        ("stop", None, False, "eos"),  # the tokenizer's EOS
        ("stop", 49152, False, "eos"),  # another end token of the generation config (stop_reason = its id)
        ("stop", "\n", False, "stop"),  # a stop string
        ("length", None, False, "length"),
        ("length", None, True, "stop"),  # a stop string found in the text after all
    ],
)
def test_finish_reason(finish, stop_reason, hit, expected) -> None:
    assert VLLMBackend.finish_reason(output("x", 1, finish, stop_reason), hit) == expected


def test_generate_maps_every_completion(tokenizer) -> None:
    outputs = [
        output("Paris.", 3, "stop"),
        output("Lyon, then\nmore", 8, "length"),
        output("A", 2, "stop", "."),
    ]

    class Engine:
        def generate(self, inputs, params, use_tqdm=False):
            assert params == "vllm-params" and use_tqdm is False
            return [SimpleNamespace(prompt_token_ids=inputs[0]["prompt_token_ids"], outputs=outputs)]

    backend = object.__new__(VLLMBackend)
    backend.llm, backend.tokenizer = Engine(), tokenizer
    backend.to_vllm_params = lambda params: "vllm-params"
    (group,) = backend.generate(["2+2="], SamplingParams(n=3, temperature=1.0, stop=("\n",)))
    n_prompt = len(backend.encode("2+2="))
    assert [(c.text, c.completion_tokens, c.finish_reason, c.prompt_tokens) for c in group] == [
        ("Paris.", 3, "eos", n_prompt),
        ("Lyon, then", 8, "stop", n_prompt),
        ("A", 2, "stop", n_prompt),
    ]
