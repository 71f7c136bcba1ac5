"""Quartet's vLLM backend (``inference/backends/vllm.py``, run in ``.venv-vllm``) against its HF backend
(this venv) on the same prompts and the same fp32 SmolLM2-135M-Instruct folder.

One driver run (one engine load) answers every job; the HF side runs in this process.
- greedy: the prompt token ids, texts, token counts and finish reasons are equal;
- a short budget: every completion stops at ``max_tokens`` and is a prefix of the longer greedy text;
- stop strings: the text is the greedy text cut before the first stop string, equal to HF's;
- sampling: ``n`` completions per prompt, within ``max_tokens``, cut at the stop string, reproducible
  from the seed, and not all alike.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests_vllm.conftest import ENGINE, ROOT, vllm_bin, vllm_env

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three primary colours."},
    ],
    "The three largest planets in the solar system are",
    {
        "next_turn": "user",
        "messages": [
            {"role": "user", "content": "Hi! Can you help me plan a trip?"},
            {"role": "assistant", "content": "Of course! Where would you like to go?"},
        ],
    },
]
GREEDY = {"max_new_tokens": 24}
SHORT = {"max_new_tokens": 4}
STOPS = [".", " is"]
GREEDY_STOP = {"max_new_tokens": 24, "stop": STOPS}
SAMPLED = {"n": 3, "temperature": 1.0, "top_p": 0.95, "max_new_tokens": 12, "seed": 1234, "stop": ["\n"]}
JOBS = {
    "greedy": GREEDY,
    "short": SHORT,
    "greedy_stop": GREEDY_STOP,
    "sampled": SAMPLED,
    "sampled_again": SAMPLED,
}


def as_prompt(raw):
    from inference.chat import NextTurn

    return NextTurn(raw["messages"], role=raw["next_turn"]) if isinstance(raw, dict) else raw


@pytest.fixture(scope="module")
def vllm_result(real_model_dir, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("vllm_driver")
    request = {
        "model": str(real_model_dir),
        "engine": ENGINE,
        "prompts": PROMPTS,
        "jobs": [{"name": k, "params": v} for k, v in JOBS.items()],
    }
    (folder / "request.json").write_text(json.dumps(request), encoding="utf-8")
    proc = subprocess.run(
        [
            str(vllm_bin("python")),
            str(ROOT / "tests_vllm" / "vllm_driver.py"),
            str(folder / "request.json"),
            str(folder / "result.json"),
        ],
        cwd=ROOT,
        env=vllm_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((folder / "result.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def hf_backend(real_model_dir):
    from inference.backends.hf import HFBackend

    return HFBackend.from_pretrained(str(real_model_dir), dtype="float32", batch_size=4)


def hf_run(backend, params: dict) -> list[list[dict]]:
    from inference.sampling import SamplingParams

    groups = backend.generate([as_prompt(p) for p in PROMPTS], SamplingParams(**params))
    return [[c.to_dict() for c in g] for g in groups]


def test_prompts_are_the_same_tokens(vllm_result, hf_backend):
    assert vllm_result["prompt_ids"] == [hf_backend.encode(as_prompt(p)) for p in PROMPTS]
    # The chat template's default system prompt and the generation prompt are in the ids.
    first = hf_backend.tokenizer.decode(vllm_result["prompt_ids"][0])
    assert first.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert first.endswith("<|im_start|>assistant\n")
    assert hf_backend.tokenizer.decode(vllm_result["prompt_ids"][3]).endswith("<|im_start|>user\n")


def test_greedy_outputs_are_equal(vllm_result, hf_backend):
    vllm_greedy = vllm_result["jobs"]["greedy"]
    assert vllm_greedy == hf_run(hf_backend, GREEDY)
    assert all(len(g) == 1 and g[0]["text"].strip() for g in vllm_greedy)
    assert "Paris" in vllm_greedy[0][0]["text"]


def test_max_tokens_cuts_the_greedy_text(vllm_result):
    for short, full in zip(vllm_result["jobs"]["short"], vllm_result["jobs"]["greedy"]):
        (s,), (f,) = short, full
        assert (s["completion_tokens"], s["finish_reason"]) == (4, "length")
        assert f["text"].startswith(s["text"]) and len(s["text"]) < len(f["text"])


def test_stop_strings_cut_like_hf(vllm_result, hf_backend):
    from inference.stopping import truncate_at_stop

    stopped = vllm_result["jobs"]["greedy_stop"]
    assert stopped == hf_run(hf_backend, GREEDY_STOP)
    hits = 0
    for (s,), (f,) in zip(stopped, vllm_result["jobs"]["greedy"]):
        expected, hit = truncate_at_stop(f["text"], STOPS)
        assert s["text"] == expected
        assert not any(stop in s["text"] for stop in STOPS)
        if hit:
            hits += 1
            assert s["finish_reason"] == "stop" and s["completion_tokens"] < f["completion_tokens"]
        else:
            assert s == f
    assert hits >= 2, stopped


def test_sampling_counts_budget_stops_and_seed(vllm_result):
    sampled = vllm_result["jobs"]["sampled"]
    assert len(sampled) == len(PROMPTS)
    for group, ids in zip(sampled, vllm_result["prompt_ids"]):
        assert len(group) == SAMPLED["n"]
        for c in group:
            assert c["prompt_tokens"] == len(ids)
            assert 1 <= c["completion_tokens"] <= SAMPLED["max_new_tokens"]
            assert "\n" not in c["text"]
            assert c["finish_reason"] in ("eos", "stop", "length")
            if c["finish_reason"] == "length":
                assert c["completion_tokens"] == SAMPLED["max_new_tokens"]
    assert vllm_result["jobs"]["sampled_again"] == sampled, "the same seed must give the same samples"
    assert any(len({c["text"] for c in g}) > 1 for g in sampled), "temperature 1 gave identical paths"
