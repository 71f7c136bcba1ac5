"""Dropless dispatch implementations vs the slow "every expert, then mask" reference, and the MoE layer
vs transformers' Mixtral sparse MoE block."""

import pytest
import torch

import models.moe.dispatch as dispatch_mod
from models.moe import (
    DISPATCH_IMPLS,
    MoELayer,
    RouterConfig,
    available_dispatch_impls,
    moe_dispatch,
    plan_dispatch,
)
from models.moe.dispatch_oracle import dense_moe_oracle

TOL = {"atol": 1e-5, "rtol": 1e-5}
IMPLS = available_dispatch_impls("cpu", torch.float32)

# (tokens, hidden, intermediate, experts, selection probability, experts forced empty)
SHAPES = [
    (13, 16, 24, 4, 0.5, (1,)),
    (40, 8, 12, 6, 0.3, (0, 5)),
    (1, 16, 16, 3, 0.9, ()),
    (64, 32, 8, 8, 0.25, (2, 3, 7)),
    (9, 8, 16, 1, 1.0, ()),
]


def make_problem(tokens, hidden, inter, experts, prob, empty, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=gen).requires_grad_()
    gate_up = (torch.randn(experts, 2 * inter, hidden, generator=gen) * 0.2).requires_grad_()
    down = (torch.randn(experts, hidden, inter, generator=gen) * 0.2).requires_grad_()
    mask = torch.rand(tokens, experts, generator=gen) < prob
    mask[:, list(empty)] = False
    weights = torch.rand(tokens, experts, generator=gen).requires_grad_()
    grad_out = torch.randn(tokens, hidden, generator=gen)
    return x, gate_up, down, mask, weights, grad_out


def grads_of(fn, tensors, grad_out):
    for t in tensors:
        t.grad = None
    out = fn()
    out.backward(grad_out)
    return out.detach(), [t.grad.clone() for t in tensors]


def test_grouped_mm_availability_is_reported():
    assert set(IMPLS) <= set(DISPATCH_IMPLS)
    assert {"fused", "loop", "batched"} <= set(IMPLS)
    assert ("grouped_mm" in IMPLS) == dispatch_mod.grouped_mm_supported("cpu", torch.float32)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"T{s[0]}H{s[1]}I{s[2]}E{s[3]}" for s in SHAPES])
def test_dispatch_matches_reference_forward_and_backward(impl, shape):
    x, gate_up, down, mask, weights, grad_out = make_problem(*shape)
    tensors = [x, gate_up, down, weights]
    ref, ref_grads = grads_of(lambda: dense_moe_oracle(x, mask, weights, gate_up, down), tensors, grad_out)
    out, got = grads_of(lambda: moe_dispatch(x, mask, weights, gate_up, down, impl=impl), tensors, grad_out)
    torch.testing.assert_close(out, ref, **TOL)
    for name, a, b in zip(("x", "gate_up", "down", "weights"), got, ref_grads):
        torch.testing.assert_close(a, b, **TOL, msg=f"{impl}: grad of {name}")
    for e in shape[5]:  # experts that received no token get exactly zero gradient
        assert gate_up.grad[e].abs().max() == 0 and down.grad[e].abs().max() == 0


@pytest.mark.parametrize("gemm", ["loop", "grouped"])
@pytest.mark.parametrize("block_rows", [3, 8, 2048])
def test_fused_blocks_and_gemm_modes_match_reference(monkeypatch, gemm, block_rows):
    if gemm == "grouped" and not dispatch_mod.grouped_mm_supported("cpu", torch.float32):
        gemm = "loop"
    monkeypatch.setattr(dispatch_mod, "FUSED_GEMM", gemm)
    monkeypatch.setattr(dispatch_mod, "FUSED_BLOCK_ROWS", block_rows)
    # Sizes with 16-byte-aligned rows so the grouped GEMM path really runs when requested.
    x, gate_up, down, mask, weights, grad_out = make_problem(37, 16, 12, 5, 0.4, (2,), seed=3)
    tensors = [x, gate_up, down, weights]
    ref, ref_grads = grads_of(lambda: dense_moe_oracle(x, mask, weights, gate_up, down), tensors, grad_out)
    out, got = grads_of(
        lambda: moe_dispatch(x, mask, weights, gate_up, down, impl="fused"), tensors, grad_out
    )
    torch.testing.assert_close(out, ref, **TOL)
    for a, b in zip(got, ref_grads):
        torch.testing.assert_close(a, b, **TOL)


def test_fused_skips_gradients_that_are_not_needed():
    x, gate_up, down, mask, weights, grad_out = make_problem(20, 8, 8, 4, 0.5, ())
    gate_up.requires_grad_(False)
    out = moe_dispatch(x, mask, weights, gate_up, down, impl="fused")
    out.backward(grad_out)
    assert gate_up.grad is None and down.grad is not None and x.grad is not None


def test_plan_sorts_pairs_by_expert():
    mask = torch.tensor([[True, False, True], [False, False, True], [True, True, False]])
    plan = plan_dispatch(mask)
    assert plan.expert_idx.tolist() == [0, 0, 1, 2, 2]
    assert plan.token_idx.tolist() == [0, 2, 2, 0, 1]
    assert plan.counts == [2, 1, 2]
    assert plan.segments == ((0, 0, 2), (1, 2, 3), (2, 3, 5))


def test_unknown_dispatch_raises():
    x, gate_up, down, mask, weights, _ = make_problem(4, 8, 8, 2, 0.5, ())
    with pytest.raises(ValueError, match="Unknown MoE dispatch"):
        moe_dispatch(x, mask, weights, gate_up, down, impl="magic")
    with pytest.raises(ValueError, match="Unknown MoE dispatch"):
        MoELayer(8, 8, 2, dispatch="magic")


@pytest.mark.parametrize("impl", IMPLS)
def test_layer_gradients_match_reference_including_router(impl):
    torch.manual_seed(0)
    layer = MoELayer(16, 24, 6, RouterConfig(kind="top_p", top_p=0.5), dispatch=impl)
    with torch.no_grad():
        layer.router.weight.normal_(std=0.5)
        layer.experts.gate_up_proj.mul_(0.5)
    x = torch.randn(2, 11, 16, requires_grad=True)
    grad_out = torch.randn(2, 11, 16)
    params = [x, layer.router.weight, layer.experts.gate_up_proj, layer.experts.down_proj]

    def reference():
        routed = layer.router(x.reshape(-1, 16))
        out = dense_moe_oracle(x.reshape(-1, 16), routed.mask, routed.weights, *layer.experts.parameters())
        return out.reshape(x.shape)

    ref, ref_grads = grads_of(reference, params, grad_out)
    out, got = grads_of(lambda: layer(x)[0], params, grad_out)
    torch.testing.assert_close(out, ref, **TOL)
    for name, a, b in zip(("x", "router", "gate_up", "down"), got, ref_grads):
        torch.testing.assert_close(a, b, **TOL, msg=f"{impl}: grad of {name}")
    assert layer.router.weight.grad.abs().sum() > 0


def test_layer_returns_aux_without_storing_state():
    layer = MoELayer(8, 8, 4, RouterConfig(kind="top_p", top_p=0.4), layer_idx=3)
    x = torch.randn(2, 5, 8)
    token_mask = torch.ones(2, 5, dtype=torch.bool)
    token_mask[0, :2] = False
    out, aux = layer(x, token_mask)
    assert out.shape == x.shape
    assert aux.router_probs.shape == aux.router_logits.shape == aux.dispatch_mask.shape == (10, 4)
    assert aux.layer_idx == 3 and aux.token_mask.tolist() == token_mask.reshape(-1).tolist()
    assert bool((aux.dispatch_mask.sum(-1) >= 1).all())
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer(x)
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    assert set(vars(layer)) == set(vars(MoELayer(8, 8, 4)))


def test_layer_runs_under_bf16_autocast():
    torch.manual_seed(0)
    layer = MoELayer(16, 16, 4, RouterConfig(kind="top_k", top_k=2, renormalize=True))
    x = torch.randn(12, 16)
    ref, _ = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, aux = layer(x)
    assert out.dtype == torch.bfloat16 and aux.router_probs.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


def mixtral_block(layer: MoELayer, impl: str):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    experts = layer.experts
    cfg = MixtralConfig(
        hidden_size=experts.hidden_size,
        intermediate_size=experts.intermediate_size,
        num_local_experts=experts.num_experts,
        num_experts_per_tok=layer.router.config.top_k,
        router_jitter_noise=0.0,
    )
    cfg._experts_implementation = impl
    block = MixtralSparseMoeBlock(cfg)
    with torch.no_grad():
        block.gate.weight.copy_(layer.router.weight)
        block.experts.gate_up_proj.copy_(experts.gate_up_proj)
        block.experts.down_proj.copy_(experts.down_proj)
    return block


@pytest.mark.parametrize("hf_impl", ["eager", "grouped_mm", "batched_mm"])
@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_top_k_layer_matches_transformers_mixtral_block(hf_impl, impl):
    torch.manual_seed(0)
    layer = MoELayer(16, 32, 8, RouterConfig(kind="top_k", top_k=2, renormalize=True), dispatch=impl)
    with torch.no_grad():
        layer.router.weight.normal_(std=0.3)
    block = mixtral_block(layer, hf_impl)
    x = torch.randn(2, 9, 16, requires_grad=True)
    grad_out = torch.randn(2, 9, 16)

    ref, ref_grads = grads_of(lambda: block(x), [x, block.gate.weight, *block.experts.parameters()], grad_out)
    ours, got = grads_of(lambda: layer(x)[0], [x, layer.router.weight, *layer.experts.parameters()], grad_out)
    torch.testing.assert_close(ours, ref, **TOL)
    for name, a, b in zip(("x", "router", "gate_up", "down"), got, ref_grads):
        torch.testing.assert_close(a, b, **TOL, msg=f"grad of {name} vs Mixtral {hf_impl}")


@pytest.mark.skipif(not dispatch_mod.grouped_mm_supported("cpu", torch.float32), reason="no _grouped_mm here")
def test_small_cpu_batches_take_grouped_mm_with_the_blocked_paths_values(monkeypatch):
    """At most SMALL_PAIRS_GROUPED pairs on CPU: "fused" runs grouped_mm_experts; its output equals the
    blocked custom backward's to 1e-6 and every gradient to 1e-6 of its largest value."""
    x, gate_up, down, mask, weights, grad_out = make_problem(96, 32, 24, 6, 0.35, (4,), seed=5)
    tensors = [x, gate_up, down, weights]
    calls = []
    grouped = dispatch_mod.grouped_mm_experts
    monkeypatch.setattr(dispatch_mod, "grouped_mm_experts", lambda *a: calls.append(1) or grouped(*a))
    run = lambda: moe_dispatch(x, mask, weights, gate_up, down, impl="fused")  # noqa: E731
    small, small_grads = grads_of(run, tensors, grad_out)
    assert calls == [1]
    monkeypatch.setattr(dispatch_mod, "SMALL_PAIRS_GROUPED", 0)  # the blocked custom backward
    blocked, blocked_grads = grads_of(run, tensors, grad_out)
    assert calls == [1]
    assert (small - blocked).abs().max() <= 1e-6
    for a, b in zip(small_grads, blocked_grads):
        assert (a - b).abs().max() <= 1e-6 * max(1.0, b.abs().max().item())
    assert gate_up.grad[4].abs().max() == 0  # the expert no token chose


def test_grouped_mm_probe_is_not_fooled_by_a_no_grad_first_call():
    """The probe runs a backward: a first call from a no_grad forward (evaluation, a benchmark's
    reference output) must not cache "unsupported" for the whole process."""
    supported = dispatch_mod.grouped_mm_supported("cpu", torch.float32)
    dispatch_mod.grouped_mm_supported.cache_clear()
    try:
        with torch.no_grad():
            assert dispatch_mod.grouped_mm_supported("cpu", torch.float32) == supported
    finally:
        dispatch_mod.grouped_mm_supported.cache_clear()
    assert supported == hasattr(torch, "_grouped_mm")


@pytest.mark.parametrize("block_rows", [7, 2048])
def test_fused_on_onednn_matches_reference_and_calls_onednn(monkeypatch, block_rows):
    """``min_macs`` (model.cpu_linear): the fused loop's expert products run on oneDNN (every one at
    min_macs=0, the small-pairs grouped path skipped) with the reference's values and gradients."""
    import models.cpu_linear as cl

    monkeypatch.setattr(dispatch_mod, "FUSED_BLOCK_ROWS", block_rows)
    x, gate_up, down, mask, weights, grad_out = make_problem(45, 32, 24, 6, 0.35, (4,), seed=7)
    tensors = [x, gate_up, down, weights]
    ref, ref_grads = grads_of(lambda: dense_moe_oracle(x, mask, weights, gate_up, down), tensors, grad_out)
    calls = []
    dnn = cl._dnn
    monkeypatch.setattr(cl, "_dnn", lambda *a: calls.append(1) or dnn(*a))
    run = lambda: moe_dispatch(x, mask, weights, gate_up, down, impl="fused", min_macs=0)  # noqa: E731
    out, got = grads_of(run, tensors, grad_out)
    pieces = sum(len(b.experts) for b in dispatch_mod._blocks(plan_dispatch(mask), block_rows, 6, False))
    assert len(calls) == 2 * pieces + 4 * pieces  # forward: gate/up and down; backward: 4 products
    torch.testing.assert_close(out, ref, **TOL)
    for name, a, b in zip(("x", "gate_up", "down", "weights"), got, ref_grads):
        torch.testing.assert_close(a, b, **TOL, msg=f"grad of {name}")
    assert gate_up.grad[4].abs().max() == 0 and down.grad[4].abs().max() == 0
    calls.clear()
    grads_of(
        lambda: moe_dispatch(x, mask, weights, gate_up, down, impl="fused", min_macs=None), tensors, grad_out
    )
    assert calls == []  # cpu_linear=aten: MKL as before
