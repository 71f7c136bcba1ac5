"""A real ``vllm serve`` of SmolLM2-135M-Instruct on 127.0.0.1 in place of the HTTP test double.

- ``eval.py backend=openai_http`` (greedy CoT, chat endpoint, temperature 0) against the server gives
  the same samples (text, prediction, token counts) and metrics as ``eval.py`` with the HF backend;
  its ``results.json`` is the score of its ``samples.jsonl``;
- the OpenAI HTTP backend directly: the completions endpoint for raw prompts, ``n`` samples per
  prompt with stop strings and ``max_tokens``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests_vllm.conftest import ROOT, SERVED_NAME

QUESTIONS = ROOT / "data" / "realmodel" / "questions.jsonl"
EVAL_ARGS = [
    f"data.path={QUESTIONS}",
    "decoding=greedy",
    "decoding.max_new_tokens=32",
    "print_config=false",
    "progress=false",
]


def run_eval(args: list[str], out: Path) -> tuple[dict, list[dict]]:
    from tests.helpers import run_script

    proc = run_script("eval.py", [*EVAL_ARGS, *args, f"hydra.run.dir={out}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    return results, rows


def test_eval_over_vllm_serve_equals_the_hf_backend(vllm_server, real_model_dir, tmp_path):
    from evaluation.reasoning.scoring import score_rows

    served, served_rows = run_eval(
        ["backend=openai_http", f"backend.base_url={vllm_server}", f"backend.model={SERVED_NAME}"],
        tmp_path / "served",
    )
    hf, hf_rows = run_eval(
        ["model=hf", f"model.pretrained={real_model_dir}", "model.dtype=float32"], tmp_path / "hf"
    )
    assert len(served_rows) == 4 and served["settings"]["num_questions"] == 4
    assert (served["metrics"], served["per_task"]) == score_rows(served_rows)
    assert set(served["metrics"]) == {"greedy"}
    assert all(row["greedy"]["text"].strip() for row in served_rows)
    # Same greedy text, prediction, correctness and prompt/completion token counts, question by question.
    assert served_rows == hf_rows
    assert served["metrics"] == hf["metrics"]


def test_http_backend_raw_prompts_samples_and_stops(vllm_server):
    from inference.backends.openai_http import OpenAIHTTPBackend
    from inference.sampling import SamplingParams

    backend = OpenAIHTTPBackend(vllm_server, SERVED_NAME, api_key_env="QUARTET_TEST_NO_KEY", max_retries=0)
    prompts = ["The capital of France is", [{"role": "user", "content": "Count from one to ten in words."}]]

    greedy = backend.generate(prompts, SamplingParams(max_new_tokens=16))
    assert [len(g) for g in greedy] == [1, 1] and all(g[0].text.strip() for g in greedy)
    stopped = backend.generate(prompts, SamplingParams(max_new_tokens=16, stop=(",", ".")))
    for (full,), (cut,) in zip(greedy, stopped):
        i = min((full.text.find(s) for s in (",", ".") if s in full.text), default=-1)
        assert cut.text == (full.text[:i] if i >= 0 else full.text)
        assert cut.finish_reason == ("stop" if i >= 0 else full.finish_reason)
    assert sum(c.finish_reason == "stop" for (c,) in stopped) >= 1

    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=7, stop=("\n",))
    sampled = backend.generate(prompts, params)
    for group in sampled:
        assert len(group) == 3
        assert sum(c.completion_tokens for c in group) <= 3 * 8
        assert all("\n" not in c.text and c.finish_reason in ("eos", "stop", "length") for c in group)
    assert backend.generate(prompts, params) == sampled, "a seeded request must repeat"
