"""Quartet Top-P MoE causal LM: HF round trip, generation, checkpointing + aux losses, upcycling."""

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from algorithms.losses.moe import moe_aux_loss
from models.quartet_moe import (
    QuartetMoEConfig,
    QuartetMoEDecoderLayer,
    QuartetMoEForCausalLM,
    upcycle_dense_to_moe,
)

VOCAB = 64


def tiny_config(**overrides) -> QuartetMoEConfig:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=4,
        moe_every_k=2,
        router_top_p=0.5,
        pad_token_id=0,
        max_position_embeddings=128,
    )
    fields.update(overrides)
    return QuartetMoEConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> QuartetMoEForCausalLM:
    torch.manual_seed(seed)
    model = QuartetMoEForCausalLM(tiny_config(**overrides))
    with torch.no_grad():  # a router with some spread, so top-p picks different expert counts
        for layer in model.model.layers:
            if layer.is_moe:
                layer.mlp.router.weight.normal_(std=0.1)
    return model.eval()


def ids(batch=2, seq=9, seed=1):
    return torch.randint(1, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_forward_returns_logits_plain_lm_loss_and_router_aux():
    model = tiny_model()
    x = ids()
    out = model(x, labels=x)
    assert out.logits.shape == (2, 9, VOCAB)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert [a.layer_idx for a in out.router_aux] == [0, 2] == model.config.moe_layer_indices
    assert isinstance(model.model.layers[1].mlp, torch.nn.Module) and not model.model.layers[1].is_moe
    assert all(isinstance(layer, QuartetMoEDecoderLayer) for layer in model.model.layers)
    for aux in out.router_aux:
        assert aux.router_probs.shape == (18, 4) and aux.dispatch_mask.dtype == torch.bool
        assert bool((aux.dispatch_mask.sum(-1) >= 1).all())
    counts = torch.cat([a.dispatch_mask.sum(-1) for a in out.router_aux])
    assert counts.min() < counts.max()  # top-p: a variable number of experts per token


def test_padding_is_left_out_of_router_stats():
    model = tiny_model()
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :4] = 0
    out = model(ids(), attention_mask=mask)
    assert out.router_aux[0].token_mask.tolist() == mask.reshape(-1).bool().tolist()


def test_save_pretrained_round_trip_and_auto_class(tmp_path):
    model = tiny_model(router_top_p=0.25, moe_every_k=1, router_renormalize=True)
    model.save_pretrained(tmp_path)
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert type(cfg) is QuartetMoEConfig and cfg.model_type == "quartet_topp_moe"
    assert (cfg.router_top_p, cfg.moe_every_k, cfg.router_renormalize) == (0.25, 1, True)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is QuartetMoEForCausalLM
    x = ids()
    assert torch.equal(loaded(x).logits, model(x).logits)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_generate_with_and_without_cache_and_left_padding():
    model = tiny_model()
    x = ids(batch=2, seq=6)
    with_cache = model.generate(x, max_new_tokens=5, do_sample=False, pad_token_id=0)
    no_cache = model.generate(x, max_new_tokens=5, do_sample=False, pad_token_id=0, use_cache=False)
    assert with_cache.shape == (2, 11)
    assert torch.equal(with_cache, no_cache)
    # A left-padded row behaves like the same prompt alone (positions come from the attention mask).
    padded = x.clone()
    padded[0, :2] = 0
    mask = torch.ones_like(x)
    mask[0, :2] = 0
    batch_out = model.generate(padded, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    alone = model.generate(x[:1, 2:], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(batch_out[0, -4:], alone[0, -4:])
    logits_pad = model(padded, attention_mask=mask).logits[0, 2:]
    torch.testing.assert_close(logits_pad, model(x[:1, 2:]).logits[0], atol=1e-5, rtol=1e-5)


def _aux_step(model, x, alpha=1.0, beta=1.0):
    model.zero_grad(set_to_none=True)
    calls = []
    hook = model.model.layers[0].mlp.router.register_forward_hook(lambda *a: calls.append(1))
    out = model(x, labels=x)
    aux_loss, metrics = moe_aux_loss(out.router_aux, alpha=alpha, beta=beta)
    aux_loss.backward()
    hook.remove()
    routers = [layer.mlp.router.weight.grad.clone() for layer in model.model.layers if layer.is_moe]
    return aux_loss.detach(), metrics, len(out.router_aux), len(calls), routers


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_(enable|disable)` is deprecated:FutureWarning")
@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_neither_double_counts_aux_nor_drops_router_grads(reentrant):
    model = tiny_model().train()
    x = ids()
    base_loss, base_metrics, base_n, base_calls, base_grads = _aux_step(model, x)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    loss, metrics, n, calls, grads = _aux_step(model, x)
    model.gradient_checkpointing_disable()
    assert base_calls == 1 and calls == 2  # the router really ran again in the recompute...
    assert n == base_n == 2  # ...but its aux tensors were not collected twice
    torch.testing.assert_close(loss, base_loss)
    torch.testing.assert_close(metrics["moe/balance_loss"], base_metrics["moe/balance_loss"])
    for g, b in zip(grads, base_grads):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, b)


def test_full_training_loss_backward_under_checkpointing():
    model = tiny_model().train()
    model.activation_checkpointing_enable()  # transformers 5 name; use_reentrant=False by default
    x = ids()
    out = model(x, labels=x)
    aux_loss, _ = moe_aux_loss(out.router_aux, alpha=1e-2, beta=1e-4)
    (out.loss + aux_loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_bf16_weights_forward_backward_and_no_training_cache():
    model = tiny_model().to(torch.bfloat16).train()
    out = model(ids(), labels=ids())
    assert out.cache is None  # training forward builds no KV cache by default
    out.loss.backward()
    grad = model.model.layers[0].mlp.experts.gate_up_proj.grad
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert model.eval()(ids()).cache is not None


def test_bf16_autocast_forward():
    model = tiny_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids(), labels=ids())
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    assert out.router_aux[0].router_probs.dtype == torch.float32


DENSE = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "llama3-rope-tied": (
        LlamaConfig,
        LlamaForCausalLM,
        {
            "tie_word_embeddings": True,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        },
    ),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "mistral-window": (MistralConfig, MistralForCausalLM, {"sliding_window": 4}),
}


def tiny_dense(kind: str, seed: int = 0):
    cfg_cls, model_cls, extra = DENSE[kind]
    cfg = cfg_cls(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        **extra,
    )
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    with torch.no_grad():  # make biases/norms non-trivial so copying them is really tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("kind", list(DENSE))
@pytest.mark.parametrize(
    "router",
    [
        {"kind": "top_k", "top_k": 2, "renormalize": True},
        {"kind": "top_p", "top_p": 0.5, "renormalize": True},
    ],
    ids=["top2-renorm", "topp-renorm"],
)
def test_upcycled_model_reproduces_dense_logits(kind, router):
    dense = tiny_dense(kind)
    moe = upcycle_dense_to_moe(dense, num_experts=4, router=router, noise_std=0.0, seed=0)
    assert type(moe) is QuartetMoEForCausalLM and not moe.training
    x = ids(seq=12)
    mask = torch.ones_like(x)
    mask[1, -3:] = 0
    with torch.no_grad():
        out = moe(x, attention_mask=mask)
        ref = dense(x, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(out.logits[real], ref[real], atol=1e-4, rtol=0)
    assert len(out.router_aux) == 2


def test_upcycle_every_k_noise_and_seed():
    dense = tiny_dense("llama")
    a = upcycle_dense_to_moe(dense, num_experts=3, noise_std=0.01, seed=7, moe_every_k=2)
    b = upcycle_dense_to_moe(dense, num_experts=3, noise_std=0.01, seed=7, moe_every_k=2)
    assert a.config.moe_layer_indices == [0]
    assert torch.equal(a.model.layers[1].mlp.gate_proj.weight, dense.model.layers[1].mlp.gate_proj.weight)
    gate_up = a.model.layers[0].mlp.experts.gate_up_proj
    dense_gate_up = torch.cat(
        [dense.model.layers[0].mlp.gate_proj.weight, dense.model.layers[0].mlp.up_proj.weight]
    )
    noise = gate_up - dense_gate_up
    assert 0.005 < noise.std().item() < 0.02
    assert not torch.equal(gate_up[0], gate_up[1])
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name
    router = a.model.layers[0].mlp.router
    assert router.config.kind == "top_p" and router.config.top_p == 0.4
    assert 0.005 < router.weight.std().item() < 0.05  # small random init (initializer_range 0.02)


def test_upcycle_from_path(tmp_path):
    dense = tiny_dense("qwen2")
    dense.save_pretrained(tmp_path)
    moe = upcycle_dense_to_moe(
        str(tmp_path), num_experts=2, router={"kind": "top_k", "top_k": 2, "renormalize": True}
    )
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(moe(x).logits, dense(x).logits, atol=1e-4, rtol=0)


def test_upcycle_rejects_unsupported_architectures(tmp_path):
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=32))
    with pytest.raises(
        ValueError, match=r"GPT2LMHeadModel.*LlamaForCausalLM.*Qwen2ForCausalLM.*MistralForCausalLM"
    ):
        upcycle_dense_to_moe(gpt2, num_experts=4)
    gpt2.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        upcycle_dense_to_moe(str(tmp_path), num_experts=4)
    with pytest.raises(ValueError, match="top_k must be in"):
        upcycle_dense_to_moe(tiny_dense("llama"), num_experts=2, router={"kind": "top_k", "top_k": 3})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"router_top_p": 0.0}, "top_p must be in"),
        ({"router_top_p": 1.01}, "top_p must be in"),
        ({"router_type": "top_k", "router_top_k": 5}, "top_k must be in"),
        ({"router_type": "top_k", "router_top_k": 0}, "top_k must be in"),
        ({"min_experts": 5}, "min_experts"),
        ({"max_experts": 0}, "max_experts"),
        ({"moe_every_k": 0}, "moe_every_k"),
        ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
        ({"moe_dispatch": "magic"}, "moe_dispatch"),
        ({"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}}, "rope_type"),
    ],
)
def test_invalid_configs_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)
