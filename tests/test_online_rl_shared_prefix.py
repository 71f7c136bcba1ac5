"""The shared-prefix forward of online RL (``algorithms/shared_prefix.py``): its layout by hand, and its
log-probs and gradients equal to the padded rows' (``model_token_logprobs``)."""

from __future__ import annotations

import pytest
import torch

from algorithms.logprobs import model_token_logprobs
from algorithms.rollouts import prefix_tensors, rollout_tensors
from algorithms.shared_prefix import can_share_prefix, shared_prefix_logprobs
from lightning_modules.online_rl import OnlineRLModule
from models import build_model


def test_prefix_tensors_layout_by_hand():
    p = prefix_tensors([[5, 6, 7], [8, 9]], [[[1, 2], [3]], [[4, 4, 2], [6]]], pad_id=0)
    assert p.prefix_ids.tolist() == [[5, 6], [0, 8]] and p.prefix_mask.tolist() == [[1, 1], [0, 1]]
    # [last prompt token, c_0 … c_{L-2}]: the inputs whose next token is each completion token
    assert p.step_ids.tolist() == [[7, 1, 0], [7, 0, 0], [9, 4, 4], [9, 0, 0]]
    assert p.completion_ids.tolist() == [[1, 2, 0], [3, 0, 0], [4, 4, 2], [6, 0, 0]]
    assert p.completion_mask.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="G the same"):
        prefix_tensors([[5, 6], [7, 8]], [[[1], [2]], [[3]]], pad_id=0)
    single = prefix_tensors([[5], [6, 7]], [[[1]], [[2]]], pad_id=0)
    assert single.prefix_mask.tolist() == [[0], [1]] and not can_share_prefix(torch.nn.Linear(1, 1), single)


def _tiny(tokenizer) -> torch.nn.Module:
    cfg = {"kind": "tiny", "arch": "llama", "hidden_size": 32, "intermediate_size": 64, "num_layers": 2,
           "num_heads": 4, "num_kv_heads": 2, "max_position_embeddings": 256, "dtype": "float32",
           "attn_implementation": "sdpa", "tie_word_embeddings": True}  # fmt: skip
    torch.manual_seed(0)
    return build_model(cfg, tokenizer)


def test_shared_prefix_logprobs_and_grads_equal_the_padded_rows(tokenizer):
    model = _tiny(tokenizer)
    g = torch.Generator().manual_seed(1)
    draw = lambda n: torch.randint(5, 1000, (n,), generator=g).tolist()  # noqa: E731
    prompts = [draw(n) for n in (7, 3, 5)]  # different lengths: left padding in the prefix
    completions = [[draw(n) for n in lens] for lens in ((4, 1, 6), (2, 5, 3), (6, 6, 1))]
    t = rollout_tensors(prompts, completions, pad_id=0, with_prefix=True)
    assert t.prefix is not None and can_share_prefix(model, t.prefix)

    logp, mask = model_token_logprobs(model, t.input_ids, t.attention_mask, t.labels)
    weights = torch.linspace(0.5, 2.0, mask.numel()).reshape(mask.shape)  # a loss that weighs every token
    (logp * weights).sum().backward()
    padded_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    raw = shared_prefix_logprobs(model, t.prefix)
    assert raw.shape == t.prefix.completion_mask.shape and raw[t.prefix.completion_mask == 0].eq(0).all()
    grid = OnlineRLModule.prefix_grid(model, t)
    assert torch.allclose(grid, logp.detach(), atol=2e-6, rtol=0)
    assert torch.equal(grid[mask], raw[t.prefix.completion_mask.bool()].detach())
    (grid * weights).sum().backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, padded_grads[name], atol=2e-5, rtol=1e-4), name


def test_a_sliding_window_cache_falls_back_to_the_padded_rows():
    """A cache that is not full-attention DynamicLayers (here a sliding window, prompts longer than it):
    the shared prefix refuses it, remembers that, and the policy and reference take the padded rows."""
    from types import SimpleNamespace

    from transformers import MistralConfig, MistralForCausalLM

    from algorithms.shared_prefix import NotSharable

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, sliding_window=4)  # fmt: skip
    model = MistralForCausalLM(config).eval()
    t = rollout_tensors(
        [[5, 6, 7, 8, 9, 10], [11, 12, 13]], [[[20, 21], [22]], [[23, 24, 25], [26]]], 0, True
    )
    assert can_share_prefix(model, t.prefix)
    with pytest.raises(NotSharable, match="DynamicSlidingWindowLayer"):
        shared_prefix_logprobs(model, t.prefix)
    assert not can_share_prefix(model, t.prefix)  # remembered: the next batch skips the prefix pass
    del model._quartet_no_shared_prompt
    stand_in = SimpleNamespace(
        model=model, ref_model=model, cfg={"beta": 0.1}, prefix_grid=OnlineRLModule.prefix_grid
    )
    logp, mask, values = OnlineRLModule.policy_logps(stand_in, t, with_values=False)
    padded, padded_mask = model_token_logprobs(model, t.input_ids, t.attention_mask, t.labels)
    assert values is None and torch.equal(mask, padded_mask) and torch.equal(logp, padded)
    assert mask.sum().item() == 7 and (logp[mask] < 0).all()
    assert not can_share_prefix(model, t.prefix)
    assert torch.equal(OnlineRLModule.reference_logps(stand_in, t), padded)
