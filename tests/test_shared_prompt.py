"""The shared-prompt forward (algorithms/shared_prompt_logprobs.py) equals the plain one: the batch
split by hand, per-token log-probs, the CaPO loss and every parameter gradient to 1e-5 on the tiny model
(prompts and responses of different lengths in one batch), the LoRA reference with the adapter off, and
the module switch (auto falls back on packed batches, true refuses)."""

from __future__ import annotations

import copy

import pytest
import torch

from algorithms.logprobs import batch_token_logprobs
from algorithms.losses.capo import capo_loss
from algorithms.packing import pack_padded_batch
from algorithms.reference import frozen_batch_logprobs
from algorithms.shared_prompt_logprobs import (
    NotSharable,
    frozen_shared_prompt_logprobs,
    shared_prompt_logprobs,
    shared_prompt_problem,
    split_pairs,
)
from datamodules.preference import PreferenceCollator
from tests.helpers import tiny_model_cfg
from utils.errors import ConfigError

TINY = tiny_model_cfg(attn_implementation="sdpa", lora={"enabled": False})
# Prompts of 5, 2, 7 tokens; responses of different lengths (1 token included), chosen and rejected.
PROMPTS = [[11, 12, 13, 14, 15], [21, 22], [31, 32, 33, 34, 35, 36, 37]]
CHOSEN = [[41, 42, 43], [51], [61, 62, 63, 64, 65, 66]]
REJECTED = [[71], [81, 82, 83, 84], [91, 92]]


def pairs_batch(pad_to: int | None = None) -> dict:
    features = [
        {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r, "neg_type": "x"}
        for p, c, r in zip(PROMPTS, CHOSEN, REJECTED)
    ]
    return PreferenceCollator(pad_id=0, neg_types=["x"], pad_to_multiple_of=pad_to)(features)


@pytest.fixture(scope="module")
def tiny():
    from models import build_model, load_tokenizer

    torch.manual_seed(0)
    model = build_model(dict(TINY), load_tokenizer(TINY["tokenizer"]))
    with torch.no_grad():  # larger weights: log-probs far from uniform, so differences would show
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.train()


def test_split_pairs_by_hand():
    lay = split_pairs(pairs_batch(pad_to=16))
    assert lay.prompt_ids.shape == (3, 7)
    assert lay.prompt_mask.sum(-1).tolist() == [5, 2, 7]
    assert lay.prompt_ids[1, :2].tolist() == [21, 22] and lay.prompt_ids[2].tolist() == PROMPTS[2]
    assert lay.prompt_lens.tolist() == [5, 2, 7, 5, 2, 7]
    assert lay.response_ids.tolist() == [
        [41, 42, 43, 0, 0, 0],
        [51, 0, 0, 0, 0, 0],
        [61, 62, 63, 64, 65, 66],
        [71, 0, 0, 0, 0, 0],
        [81, 82, 83, 84, 0, 0],
        [91, 92, 0, 0, 0, 0],
    ]
    assert lay.response_mask.sum(-1).tolist() == [3, 1, 6, 1, 4, 2]
    assert lay.grid_mask.shape == (6, 15) and lay.grid_mask.sum().item() == 17
    assert lay.grid_mask[1].nonzero().flatten().tolist() == [1]  # entry t scores token t + 1: the response


def test_rows_that_do_not_pair_are_refused():
    batch = pairs_batch()
    batch["input_ids"][4, 1] = 99  # rejected row of pair 1 no longer has pair 1's prompt
    with pytest.raises(NotSharable, match="do not share their prompt"):
        split_pairs(batch)
    odd = {k: v[:5] for k, v in pairs_batch().items() if k != "neg_type"}
    with pytest.raises(NotSharable, match="2B"):
        split_pairs(odd)


@pytest.mark.parametrize("impl", ["chunked", "full"])
def test_logprobs_loss_and_gradients_equal_the_plain_forward(tiny, impl):
    batch = pairs_batch(pad_to=8)
    ref = copy.deepcopy(tiny).requires_grad_(False).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    results = []
    for score, frozen in ((batch_token_logprobs, frozen_batch_logprobs), (shared_prompt_logprobs, None)):
        tiny.zero_grad()
        tok = score(tiny, batch, impl)
        ref_tok = (frozen or frozen_shared_prompt_logprobs)(ref, batch, impl=impl)
        seq, ref_seq = tok.logp.sum(-1), ref_tok.logp.sum(-1)
        loss, _ = capo_loss(seq[:3], seq[3:], ref_seq[:3], ref_seq[3:], beta=0.1)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in tiny.named_parameters()}
        results.append((tok, ref_tok, loss.detach(), grads))
    (plain, plain_ref, plain_loss, plain_g), (shared, shared_ref, shared_loss, shared_g) = results
    assert torch.equal(plain.mask, shared.mask) and torch.equal(plain.correct, shared.correct)
    assert plain.mask.sum().item() == 17 and (plain.logp[plain.mask] < 0).all()
    torch.testing.assert_close(shared.logp, plain.logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(shared_ref.logp, plain_ref.logp, atol=1e-5, rtol=0)
    assert abs(plain_loss.item() - 0.6931) > 1e-3  # policy and reference differ: a real loss
    torch.testing.assert_close(shared_loss, plain_loss, atol=1e-5, rtol=0)
    assert plain_g.keys() == shared_g.keys()
    for name, g in plain_g.items():
        assert g.abs().sum() > 0, name  # every parameter gets a gradient, the prompt's layers included
        torch.testing.assert_close(shared_g[name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_lora_reference_with_the_adapter_off(tiny):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.1)
    batch = pairs_batch()
    for off in (True, False):
        plain = frozen_batch_logprobs(model, batch, adapter_off=off)
        shared = frozen_shared_prompt_logprobs(model, batch, adapter_off=off)
        torch.testing.assert_close(shared.logp, plain.logp, atol=1e-5, rtol=0)
    base = frozen_batch_logprobs(tiny, batch)
    torch.testing.assert_close(frozen_shared_prompt_logprobs(model, batch, adapter_off=True).logp, base.logp)
    assert not torch.allclose(frozen_shared_prompt_logprobs(model, batch).logp, base.logp, atol=1e-3)
    assert model.training  # eval mode only for the call


def test_problems_are_named(tiny):
    batch = pairs_batch()
    assert shared_prompt_problem(tiny, batch) is None
    assert "packed" in shared_prompt_problem(tiny, pack_padded_batch(batch))
    with pytest.raises(NotSharable, match="packed"):
        shared_prompt_logprobs(tiny, pack_padded_batch(batch))


def test_capo_module_switch(tmp_path):
    from hydra.utils import instantiate

    from tests.helpers import compose_cfg

    def module(choice: str):
        cfg = compose_cfg(["experiment=capo_tiny", f"module.shared_prompt={choice}"], tmp_path)
        m = instantiate(cfg.module)
        m.configure_model()
        return m

    auto, on = module("auto"), module("true")
    batch = pairs_batch()
    packed = pack_padded_batch(batch)
    assert auto._shared_layout(auto.model, batch) is not None
    assert auto._shared_layout(auto.model, packed) is None
    assert "packed" in auto._shared_off_reason
    with pytest.raises(ConfigError, match="shared_prompt=true can't apply: the batch is packed"):
        on.compute_loss(packed)
    loss_on, _ = on.compute_loss(batch)
    on.shared_prompt = False
    loss_off, _ = on.compute_loss(batch)
    torch.testing.assert_close(loss_on, loss_off, atol=1e-6, rtol=0)
    from hydra.errors import InstantiationException

    for bad in ("maybe", "true model.gradient_checkpointing=true"):
        cfg = compose_cfg(["experiment=capo_tiny", *f"module.shared_prompt={bad}".split()], tmp_path)
        with pytest.raises(InstantiationException) as e:
            instantiate(cfg.module)
        assert isinstance(e.value.__cause__, ConfigError) and "module.shared_prompt" in str(e.value.__cause__)


def test_one_token_responses_need_no_continuation_pass(tiny):
    features = [
        {"prompt_ids": p, "chosen_ids": [5 + i], "rejected_ids": [9 + i], "neg_type": "x"}
        for i, p in enumerate(PROMPTS)
    ]
    batch = PreferenceCollator(pad_id=0, neg_types=["x"])(features)
    assert split_pairs(batch).response_ids.shape == (6, 1)
    plain, shared = frozen_batch_logprobs(tiny, batch), frozen_shared_prompt_logprobs(tiny, batch)
    assert shared.mask.sum().item() == 6
    torch.testing.assert_close(shared.logp, plain.logp, atol=1e-5, rtol=0)


def test_a_sliding_window_cache_is_refused_and_remembered():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=128,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=4,
    )
    model = MistralForCausalLM(config).eval()
    batch = pairs_batch()
    assert shared_prompt_problem(model, batch) is None
    with pytest.raises(NotSharable, match="DynamicSlidingWindowLayer"):
        shared_prompt_logprobs(model, batch)
    assert "DynamicSlidingWindowLayer" in shared_prompt_problem(model, batch)  # the next batch falls back


def test_shared_prompt_true_with_packing_is_a_start_up_error(tmp_path):
    from tests.helpers import compose_cfg
    from utils.config_validation import validate_train_config

    cfg = compose_cfg(["experiment=capo_tiny", "module.shared_prompt=true", "data.packing=true"], tmp_path)
    with pytest.raises(ConfigError, match="module.shared_prompt=true .* data.packing=true"):
        validate_train_config(cfg)
    validate_train_config(compose_cfg(["experiment=capo_tiny", "data.packing=true"], tmp_path))  # auto: fine


@pytest.mark.parametrize("prompts", [[[11], [21], [31]], [[11], [21, 22, 23], [31]]])
def test_one_token_prompts_have_an_empty_prefix(tiny, prompts):
    """A one-token prompt leaves an empty prefix: all of them (no prefix pass, no cache) or one among
    longer prompts (its prefix row is padding only, hidden by the step pass's mask)."""
    features = [
        {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r, "neg_type": "x"}
        for p, c, r in zip(prompts, CHOSEN, REJECTED)
    ]
    batch = PreferenceCollator(pad_id=0, neg_types=["x"])(features)
    plain, shared = frozen_batch_logprobs(tiny, batch), frozen_shared_prompt_logprobs(tiny, batch)
    assert shared.mask.sum().item() == 17 and torch.equal(shared.mask, plain.mask)
    torch.testing.assert_close(shared.logp, plain.logp, atol=1e-5, rtol=0)
