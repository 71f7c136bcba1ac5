"""The static-cache decode path (inference/static_decode.py) against the eager decode loop, tiny Llama."""

from __future__ import annotations

import dataclasses

import pytest

from inference.backends.hf import HFBackend
from inference.decoding import generate_token_ids
from inference.sampling import SamplingParams
from inference.static_decode import CAPACITY_STEP, static_capacity
from tests.inference_helpers import make_tokenizer, tiny_llama

PROMPTS = ["Tom has 3 apples and buys 4 more.", "Mia has 12 pencils. How many", "A pen costs $3.\nAnswer:"]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=0, eos_token_id=tok.eos_token_id)


def _run(model, tok, params: SamplingParams, decode: str, eos: list[int] | None = None):
    ids = [tok(p)["input_ids"] for p in PROMPTS]  # different lengths: left padding is exercised
    eos = [tok.eos_token_id] if eos is None else eos
    out = generate_token_ids(
        model, ids, params, eos_token_ids=eos, pad_token_id=tok.pad_token_id, decode=decode
    )
    return [[(s.token_ids, s.num_tokens, s.finish_reason) for s in group] for group in out]


def test_capacity_is_prompt_plus_new_tokens_rounded_up() -> None:
    assert CAPACITY_STEP == 128
    assert static_capacity(100, 28) == 128
    assert static_capacity(100, 29) == 256
    assert static_capacity(1, 1) == 128


def test_static_cache_greedy_tokens_equal_the_eager_loop(model, tok) -> None:
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    eager = _run(model, tok, params, "eager")
    assert all(len(g[0][0]) == 40 for g in eager)
    assert _run(model, tok, params, "static") == eager


def test_static_cache_seeded_sampling_and_eos_equal_the_eager_loop(model, tok) -> None:
    # Rows that stop at EOS are dropped by the eager loop but kept (unrecorded) by the static one: the
    # samples of the other rows must not notice.
    params = SamplingParams(n=3, temperature=1.5, max_new_tokens=30, seed=7)
    free = _run(model, tok, dataclasses.replace(params, ignore_eos=True), "eager")
    eos = [free[0][0][0][10]]  # a token the first row samples at step 10: that row ends there
    eager = _run(model, tok, params, "eager", eos)
    assert {s[2] for g in eager for s in g} == {"eos", "length"}, "the test needs rows that end early"
    assert _run(model, tok, params, "static", eos) == eager


def test_unknown_decode_mode_is_refused(model, tok) -> None:
    with pytest.raises(ValueError, match="decode"):
        HFBackend(model, tok, decode="fast")
    with pytest.raises(ValueError, match="decode"):
        _run(model, tok, SamplingParams(max_new_tokens=2), "fast")


@pytest.mark.slow
def test_compiled_decode_gives_the_eager_greedy_text(model, tok) -> None:
    params = SamplingParams(max_new_tokens=24, stop=["\n\n"])
    eager = HFBackend(model, tok, batch_size=8).generate(PROMPTS, params)
    compiled = HFBackend(model, tok, batch_size=8, decode="compiled").generate(PROMPTS, params)
    assert [[c.to_dict() for c in g] for g in compiled] == [[c.to_dict() for c in g] for g in eager]
