"""The static-cache and prepacked decode paths give the eager loop's greedy tokens on SmolLM2-135M-Instruct."""

from __future__ import annotations

import json

import pytest
import torch

from inference.chat import encode_prompt
from inference.decoding import generate_token_ids
from inference.sampling import SamplingParams
from tests.realmodel.conftest import DIALOGUES

pytestmark = pytest.mark.realmodel


def test_static_cache_greedy_tokens_equal_the_eager_loop(real_model_dir, real_tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()
    lines = DIALOGUES.read_text().splitlines()[:3]
    prompts = [encode_prompt(real_tokenizer, json.loads(line)["messages"][:1]) for line in lines]
    assert len({len(p) for p in prompts}) == 3  # three lengths: the left padding differs per row
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    kw = {"eos_token_ids": [], "pad_token_id": real_tokenizer.pad_token_id}
    eager = [g[0].token_ids for g in generate_token_ids(model, prompts, params, **kw)]
    static = [g[0].token_ids for g in generate_token_ids(model, prompts, params, decode="static", **kw)]
    assert all(len(ids) == 16 for ids in eager)
    assert static == eager


def test_prepacked_greedy_tokens_equal_the_eager_loop(real_model_dir, real_tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()
    lines = DIALOGUES.read_text().splitlines()[:3]
    prompts = [encode_prompt(real_tokenizer, json.loads(line)["messages"][:1]) for line in lines]
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    kw = {"eos_token_ids": [], "pad_token_id": real_tokenizer.pad_token_id}
    eager = [g[0].token_ids for g in generate_token_ids(model, prompts, params, **kw)]
    packed = [g[0].token_ids for g in generate_token_ids(model, prompts, params, decode="prepacked", **kw)]
    assert all(len(ids) == 16 for ids in eager)
    assert packed == eager
