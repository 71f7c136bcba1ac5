"""MoE aux losses (balance, dynamic/entropy, z-loss), routing statistics and moe_aux_loss."""

import math

import pytest
import torch

from algorithms.losses.moe import (
    balance_loss,
    dynamic_loss,
    moe_aux_loss,
    router_entropy,
    router_z_loss,
    routing_stats,
)
from models.moe import MoEAux, MoELayer, RouterConfig


def test_balance_loss_is_one_under_uniform_routing():
    tokens, experts = 64, 8
    probs = torch.full((tokens, experts), 1.0 / experts)
    mask = torch.zeros(tokens, experts, dtype=torch.bool)
    for t in range(tokens):  # every expert gets the same number of (token, expert) pairs
        mask[t, t % experts] = mask[t, (t + 3) % experts] = True
    torch.testing.assert_close(balance_loss(probs, mask), torch.tensor(1.0))
    # Near-uniform random routers with top-p give ~1 too.
    torch.manual_seed(0)
    layer = MoELayer(32, 8, 8, RouterConfig(kind="top_p", top_p=0.4))
    with torch.no_grad():
        layer.router.weight.mul_(0.01)
    _, aux = layer(torch.randn(4096, 32))
    assert abs(balance_loss(aux.router_probs, aux.dispatch_mask).item() - 1.0) < 0.02


def test_balance_loss_by_hand_and_collapse():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    mask = torch.tensor([[True, False, False], [True, True, False]])
    f = torch.tensor([2 / 3, 1 / 3, 0.0])
    q = probs.mean(0)
    torch.testing.assert_close(balance_loss(probs, mask), 3 * (f * q).sum())
    # All tokens on one expert with probability ~1: the loss approaches N.
    collapsed = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 5)
    torch.testing.assert_close(balance_loss(collapsed, collapsed.bool()), torch.tensor(4.0))


def test_balance_loss_uses_the_mask_without_gradient():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, True, False]])
    balance_loss(probs, mask).backward()
    f = torch.tensor([1 / 3, 2 / 3, 0.0])
    # dL_b/dP_{t,i} = N * f_i / T: f carries no gradient, Q is a plain mean.
    torch.testing.assert_close(probs.grad, (3 * f / 2).expand(2, 3))


def test_dynamic_loss_equals_entropy_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(10, 6) * 3
    p = logits.exp() / logits.exp().sum(-1, keepdim=True)
    by_hand = -(p * p.log()).sum(-1).mean()
    torch.testing.assert_close(dynamic_loss(logits), by_hand)
    torch.testing.assert_close(router_entropy(logits).mean(), by_hand)
    # Uniform router: entropy log N; one-hot-like router: ~0.
    torch.testing.assert_close(dynamic_loss(torch.zeros(3, 8)), torch.tensor(math.log(8)))
    assert dynamic_loss(torch.tensor([[100.0, 0.0, 0.0]])).item() < 1e-6


def test_z_loss_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    lse = torch.logsumexp(logits, -1)
    torch.testing.assert_close(router_z_loss(logits), (lse**2).mean())


def test_token_mask_drops_padding_from_losses():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    probs = logits.softmax(-1)
    mask = torch.rand(6, 4) < 0.5
    mask[:, 0] = True
    keep = torch.tensor([True, True, False, True, False, True])
    torch.testing.assert_close(balance_loss(probs, mask, keep), balance_loss(probs[keep], mask[keep]))
    torch.testing.assert_close(dynamic_loss(logits, keep), dynamic_loss(logits[keep]))
    torch.testing.assert_close(router_z_loss(logits, keep), router_z_loss(logits[keep]))


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.0), (0.0, 1.0)])
def test_each_aux_loss_reaches_the_router(alpha, beta):
    torch.manual_seed(0)
    layer = MoELayer(16, 8, 4, RouterConfig(kind="top_p", top_p=0.4))
    _, aux = layer(torch.randn(32, 16))
    loss, _ = moe_aux_loss([aux], alpha=alpha, beta=beta)
    loss.backward()
    assert layer.router.weight.grad is not None
    assert layer.router.weight.grad.abs().sum() > 0
    assert layer.experts.gate_up_proj.grad is None  # the aux losses only train the router


def test_moe_aux_loss_averages_layers_and_reports_metrics():
    torch.manual_seed(0)
    auxes = []
    for idx in (0, 2):
        logits = torch.randn(12, 4, requires_grad=True)
        probs = logits.softmax(-1)
        mask = torch.rand(12, 4) < 0.4
        mask[:, idx] = True
        auxes.append(MoEAux(logits, probs, mask, None, idx))
    loss, metrics = moe_aux_loss(auxes, alpha=1e-2, beta=1e-4, z=1e-3)
    lb = [balance_loss(a.router_probs, a.dispatch_mask) for a in auxes]
    ld = [dynamic_loss(a.router_logits) for a in auxes]
    lz = [router_z_loss(a.router_logits) for a in auxes]
    expected = 1e-2 * (lb[0] + lb[1]) / 2 + 1e-4 * (ld[0] + ld[1]) / 2 + 1e-3 * (lz[0] + lz[1]) / 2
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metrics["moe/balance_loss"], (lb[0] + lb[1]).detach() / 2)
    torch.testing.assert_close(metrics["moe/dynamic_loss"], (ld[0] + ld[1]).detach() / 2)
    k = [a.dispatch_mask.sum(-1).float().mean() for a in auxes]
    torch.testing.assert_close(metrics["moe/layer2/experts_per_token"], k[1])
    torch.testing.assert_close(metrics["moe/activated_ratio_vs_top2"], (k[0] + k[1]) / 4)
    assert all(not v.requires_grad for v in metrics.values())
    empty_loss, empty_metrics = moe_aux_loss([])
    assert empty_loss.item() == 0.0 and empty_metrics == {}


def test_routing_stats_on_a_hand_example():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.4, 0.4, 0.2], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 1]], dtype=torch.bool)
    stats = routing_stats(probs, mask)
    torch.testing.assert_close(stats["experts_per_token"], torch.tensor(7 / 4))
    assert stats["experts_per_token_hist"].tolist() == [0, 2, 1, 1]
    assert stats["tokens_per_expert"].tolist() == [3, 2, 2]
    torch.testing.assert_close(stats["expert_fraction"], torch.tensor([3 / 7, 2 / 7, 2 / 7]))
    torch.testing.assert_close(stats["activated_ratio_vs_top2"], torch.tensor(7 / 8))
    torch.testing.assert_close(stats["load_imbalance"], torch.tensor(3 / (7 / 3)))
    entropy = -(probs * probs.log()).sum(-1).mean()
    torch.testing.assert_close(stats["router_entropy"], entropy)
    masked = routing_stats(probs, mask, token_mask=torch.tensor([True, False, True, True]))
    assert masked["experts_per_token_hist"].tolist() == [0, 2, 1, 0]
