"""Top-k / Top-P router selection (arXiv 2403.07652) on hand examples, plus config validation."""

import math

import pytest
import torch

from models.moe import (
    Router,
    RouterConfig,
    TopKRouter,
    TopPRouter,
    build_router,
    top_k_mask,
    top_p_mask,
)


def router_for_probs(probs: list[float], **kwargs) -> tuple[Router, torch.Tensor]:
    """A router with hidden size 1 whose logits for input [[1.0]] are log(probs)."""
    router = TopPRouter(1, len(probs), **kwargs)
    with torch.no_grad():
        router.weight.copy_(torch.tensor(probs).log().unsqueeze(1))
    return router, torch.ones(1, 1)


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.4, [True, False, False, False]),  # 0.5 crosses 0.4 and is kept
        (0.6, [True, True, False, False]),  # 0.5 < 0.6, 0.3 crosses -> kept
        (0.85, [True, True, True, False]),  # 0.5 + 0.3 < 0.85, 0.15 crosses
        (0.96, [True, True, True, True]),
    ],
)
def test_top_p_keeps_the_crossing_expert(p, expected):
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert top_p_mask(probs, p).tolist() == [expected]
    # Same rule with the experts permuted: selection follows probability order, not index order.
    perm = torch.tensor([2, 0, 3, 1])
    assert top_p_mask(probs[:, perm], p).tolist() == [[expected[i] for i in perm.tolist()]]


def test_top_p_cumsum_equal_to_p_is_not_exceeding():
    # cumsum reaches exactly p after the first expert: not yet exceeded, so the next one is added.
    probs = torch.tensor([[0.5, 0.25, 0.25]])
    assert top_p_mask(probs, 0.5).tolist() == [[True, True, False]]


def test_top_p_router_weights_are_raw_probabilities_by_default():
    router, x = router_for_probs([0.5, 0.3, 0.15, 0.05], top_p=0.6)
    out = router(x)
    assert out.mask.tolist() == [[True, True, False, False]]
    torch.testing.assert_close(out.probs, torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.testing.assert_close(out.weights, torch.tensor([[0.5, 0.3, 0.0, 0.0]]))
    # A single softmax: probs are softmax(logits), weights are masked probs (never softmaxed again).
    torch.testing.assert_close(out.probs, out.logits.softmax(-1))


def test_top_p_renormalised_weights_sum_to_one():
    router, x = router_for_probs([0.5, 0.3, 0.15, 0.05], top_p=0.6, renormalize=True)
    out = router(x)
    torch.testing.assert_close(out.weights, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


def test_top_p_always_selects_at_least_one_expert():
    torch.manual_seed(0)
    probs = torch.randn(64, 8).mul(10).softmax(-1)  # very peaked rows
    mask = top_p_mask(probs, 1e-6)
    assert mask.sum(-1).tolist() == [1] * 64
    assert torch.equal(mask.float().argmax(-1), probs.argmax(-1))


def test_top_p_one_selects_every_expert_despite_rounding():
    torch.manual_seed(0)
    probs = torch.randn(256, 64).mul(8).softmax(-1)
    sorted_p = probs.sort(-1, descending=True).values
    # fp32 cumsums drift past 1 before the last experts for some rows; p = 1 must still keep all.
    assert bool((sorted_p.cumsum(-1)[:, :-1] >= 1.0).any())
    assert bool(top_p_mask(probs, 1.0).all())
    router = TopPRouter(16, 64, top_p=1.0)
    assert bool(router(torch.randn(32, 16)).mask.all())


def test_min_and_max_experts_are_honoured():
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.05, 0.05], [0.2, 0.2, 0.2, 0.2, 0.2]])
    assert top_p_mask(probs, 0.3, min_experts=2).sum(-1).tolist() == [2, 2]
    assert top_p_mask(probs, 0.3, min_experts=3).tolist()[0] == [True, True, True, False, False]
    assert top_p_mask(probs, 0.93, max_experts=2).sum(-1).tolist() == [2, 2]
    assert top_p_mask(probs, 0.93, max_experts=1).tolist()[0] == [True, False, False, False, False]
    assert top_p_mask(probs, 0.93).sum(-1).tolist() == [4, 5]


def test_top_k_mask_and_router():
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    assert top_k_mask(probs, 2).tolist() == [[False, True, False, True]]
    router = TopKRouter(4, 4, top_k=2, renormalize=True)
    with torch.no_grad():
        router.weight.copy_(torch.eye(4))
    out = router(torch.tensor([[0.0, 2.0, 1.0, 1.5]]))
    assert out.mask.tolist() == [[False, True, False, True]]
    e1, e3 = math.exp(2.0), math.exp(1.5)
    torch.testing.assert_close(out.weights, torch.tensor([[0.0, e1 / (e1 + e3), 0.0, e3 / (e1 + e3)]]))
    raw = TopKRouter(4, 4, top_k=2, renormalize=False)
    raw.load_state_dict(router.state_dict())
    raw_out = raw(torch.tensor([[0.0, 2.0, 1.0, 1.5]]))
    torch.testing.assert_close(raw_out.weights, raw_out.probs * raw_out.mask)


def test_router_math_is_fp32_under_bf16():
    router = TopPRouter(8, 4)
    x = torch.randn(5, 8, dtype=torch.bfloat16)
    out = router(x)
    assert out.logits.dtype == out.probs.dtype == out.weights.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = router(torch.randn(5, 8))
    assert out.logits.dtype == torch.float32
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(5))


def test_combine_weight_gradient_reaches_router():
    router = TopPRouter(8, 4, top_p=0.5)
    out = router(torch.randn(6, 8))
    (out.weights * torch.randn(6, 4)).sum().backward()
    assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("cfg", "num_experts", "match"),
    [
        (RouterConfig(top_p=0.0), 8, "top_p must be in"),
        (RouterConfig(top_p=1.5), 8, "top_p must be in"),
        (RouterConfig(top_p=-0.1), 8, "top_p must be in"),
        (RouterConfig(kind="top_k", top_k=0), 8, "top_k must be in"),
        (RouterConfig(kind="top_k", top_k=9), 8, "top_k must be in"),
        (RouterConfig(min_experts=0), 8, "min_experts"),
        (RouterConfig(min_experts=9), 8, "min_experts"),
        (RouterConfig(max_experts=9), 8, "max_experts"),
        (RouterConfig(max_experts=0), 8, "max_experts"),
        (RouterConfig(min_experts=3, max_experts=2), 8, "max_experts"),
        (RouterConfig(kind="top_z"), 8, "router kind"),
    ],
)
def test_invalid_router_configs_raise(cfg, num_experts, match):
    with pytest.raises(ValueError, match=match):
        Router(16, num_experts, cfg)


def test_build_router_from_dict_and_unknown_keys():
    router = build_router(16, 4, {"kind": "top_k", "top_k": 3})
    assert router.config.kind == "top_k" and router.config.top_k == 3
    with pytest.raises(ValueError, match="Unknown router option"):
        build_router(16, 4, {"kind": "top_p", "p": 0.3})
    with pytest.raises(ValueError, match="top_p must be in"):
        TopPRouter(16, 4, top_p=2.0)
