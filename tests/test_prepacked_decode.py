"""decode='prepacked' (inference/prepacked.py): linear layers on oneDNN-packed weights, tiny Llama."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inference.backends.hf import HFBackend
from inference.decoding import generate_token_ids
from inference.prepacked import packable, packed_weight, prepack_supported, prepacked_linears
from inference.sampling import SamplingParams
from tests.inference_helpers import make_tokenizer, tiny_llama

PROMPTS = ["Tom has 3 apples and buys 4 more.", "Mia has 12 pencils. How many", "A pen costs $3.\nAnswer:"]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=0, eos_token_id=tok.eos_token_id)


def _greedy(model, tok, decode: str) -> list[list[int]]:
    ids = [tok(p)["input_ids"] for p in PROMPTS]  # three lengths: left padding is exercised
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    out = generate_token_ids(
        model, ids, params, eos_token_ids=[], pad_token_id=tok.pad_token_id, decode=decode
    )
    return [g[0].token_ids for g in out]


def test_prepacked_greedy_tokens_equal_the_eager_loop(model, tok) -> None:
    eager = _greedy(model, tok, "eager")
    assert all(len(ids) == 40 for ids in eager)
    assert _greedy(model, tok, "prepacked") == eager
    # Leaving the decoder restores every layer's own forward.
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_backend_with_prepacked_decode_gives_the_eager_text(model, tok) -> None:
    params = SamplingParams(max_new_tokens=12, ignore_eos=True)
    texts = {
        d: [c[0].text for c in HFBackend(model, tok, decode=d).generate(PROMPTS, params)]
        for d in ("eager", "prepacked")
    }
    assert texts["prepacked"] == texts["eager"]
    assert all(t for t in texts["eager"])


def test_packed_linear_matches_the_plain_one_and_follows_weight_updates() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(24, 10)
    x = torch.randn(3, 5, 24)
    with torch.inference_mode():
        plain = layer(x)
        with prepacked_linears(layer) as switched:
            assert switched == 1
            packed = layer(x)
            first = packed_weight(layer)
        torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-6)
        assert packed_weight(layer) is first  # packed once, reused by the next generation
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # an optimiser step between two generations
    with torch.inference_mode(), prepacked_linears(layer):
        updated = layer(x)
    assert packed_weight(layer) is not first
    torch.testing.assert_close(
        updated, nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6
    )
    assert not torch.allclose(updated, plain)


def test_forward_is_restored_when_the_block_raises() -> None:
    layer = nn.Linear(4, 4)
    with pytest.raises(RuntimeError, match="boom"), prepacked_linears(layer):
        assert "forward" in layer.__dict__
        raise RuntimeError("boom")
    assert "forward" not in layer.__dict__


def test_only_float32_cpu_linears_are_packed_and_nothing_packable_is_refused() -> None:
    assert prepack_supported()  # the pinned CPU torch ships oneDNN
    assert packable(nn.Linear(4, 4))
    assert not packable(nn.Linear(4, 4).to(torch.bfloat16))
    assert not packable(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="prepacked"), prepacked_linears(nn.Linear(4, 4).to(torch.bfloat16)):
        pass


def test_backend_refuses_prepacked_for_a_model_it_cannot_pack(model, tok) -> None:
    bf16 = tiny_llama(len(tok), seed=0).to(torch.bfloat16)
    with pytest.raises(ValueError, match="float32 nn.Linear"):
        HFBackend(bf16, tok, decode="prepacked")
    HFBackend(model, tok, decode="prepacked")  # a float32 CPU model is accepted
