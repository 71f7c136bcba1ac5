"""RLMEC loss and reward map (algorithms/losses/rlmec.py) against the formulas computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms.losses.rlmec import rlmec_loss
from algorithms.token_rewards import grm_token_rewards


# ---------------------------------------------------------------- reward map
def test_reward_map_correct_sample_bounds():
    p = torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0])
    r = grm_token_rewards(p, True)
    assert r.dtype == torch.float32
    assert r.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.2, 0.5], abs=1e-7)


def test_reward_map_wrong_sample_bounds():
    p = torch.tensor([0.0, 0.3, 0.45, 0.5, 0.9, 1.0])
    r = grm_token_rewards(p, False)
    assert r.tolist() == pytest.approx([-0.1, -0.1, -0.05, 0.0, 0.0, 0.0], abs=1e-7)


def test_reward_map_per_sample_flag_and_bad_probs():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    r = grm_token_rewards(p, torch.tensor([[True], [False]]))
    assert r.flatten().tolist() == pytest.approx([0.5, 0.0, 0.0, -0.1])
    with pytest.raises(ValueError, match="probabilities"):
        grm_token_rewards(torch.tensor([1.2]), True)


# ---------------------------------------------------------------- loss
def _batch():
    """Two samples: one correct (positive rewards, one large ratio), one wrong (negative rewards,
    one small ratio); one padded position in each."""
    policy = torch.tensor([[-1.0, -0.5, -2.0, 0.0], [-0.2, -1.5, -0.7, -3.0]])
    # log-ratios: [0, 0.5 (ρ=1.65 > 1.3, clipped for r>0), -0.1, pad], [-0.6 (ρ=0.55 < 0.7, clipped for r<0), 0.2, 0, 0.1]
    ref = torch.tensor([[-1.0, -1.0, -1.9, 0.0], [0.4, -1.7, -0.7, -3.1]])
    rewards = torch.tensor([[0.2, 0.4, 0.0, 0.0], [-0.1, -0.05, 0.0, -0.02]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    rw_logps = torch.tensor([[-0.3, -0.6, 0.0], [-1.0, -2.0, -0.5]])
    rw_weights = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.5, 1.0]])
    rw_mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    correct = torch.tensor([True, False])
    return policy, ref, rewards, mask, rw_logps, rw_weights, rw_mask, correct


def _by_hand(normalizer: str, eps: float = 0.3, lam: float = 1.0) -> tuple[float, float, float]:
    policy, ref, rewards, mask, rw_logps, rw_weights, rw_mask, _ = (t.tolist() for t in _batch())
    num_rl, nz, toks = 0.0, 0, 0
    for b in range(2):
        for t in range(4):
            if not mask[b][t]:
                continue
            toks += 1
            r = rewards[b][t]
            rho = math.exp(policy[b][t] - ref[b][t])
            w = min(rho * r, min(max(rho, 1 - eps), 1 + eps) * r)
            num_rl += w * policy[b][t]
            nz += r != 0
    num_ir, nzw, rtoks = 0.0, 0, 0
    for b in range(2):
        for j in range(3):
            if rw_mask[b][j]:
                rtoks += 1
                num_ir += rw_weights[b][j] * rw_logps[b][j]
                nzw += rw_weights[b][j] != 0
    n_rl, n_ir = (nz, nzw) if normalizer == "nonzero" else (toks, rtoks)
    l_rl, l_ir = -num_rl / n_rl, -num_ir / n_ir
    return l_rl + lam * l_ir, l_rl, l_ir


@pytest.mark.parametrize("normalizer", ["nonzero", "tokens"])
def test_loss_equals_formula(normalizer):
    *tensors, correct = _batch()
    loss, m = rlmec_loss(*tensors, correct=correct, normalizer=normalizer)
    total, l_rl, l_ir = _by_hand(normalizer)
    assert loss.item() == pytest.approx(total, rel=1e-6)
    assert m["loss_rl"].item() == pytest.approx(l_rl, rel=1e-6)
    assert m["loss_ir"].item() == pytest.approx(l_ir, rel=1e-6)
    assert m["n_rl"].item() == (5 if normalizer == "nonzero" else 7)
    assert m["n_ir"].item() == 5


def test_clipped_branches_by_hand():
    """The two clipped tokens use 1+ε (r > 0) and 1−ε (r < 0); the others use ρ itself."""
    *tensors, correct = _batch()
    _, m = rlmec_loss(*tensors, correct=correct, normalizer="nonzero", lam=0.0)
    # weights: 0.2*1, 1.3*0.4, 0 | 0.7*(-0.1), exp(0.2)*(-0.05), 0, exp(0.1)*(-0.02)
    w = [0.2, 1.3 * 0.4, -0.07, math.exp(0.2) * -0.05, math.exp(0.1) * -0.02]
    logp = [-1.0, -0.5, -0.2, -1.5, -3.0]
    expected = -sum(a * b for a, b in zip(w, logp)) / 5
    assert m["loss_rl"].item() == pytest.approx(expected, rel=1e-6)
    assert m["clip_frac"].item() == pytest.approx(2 / 5)
    assert m["nonzero_reward_frac"].item() == pytest.approx(5 / 7)


def test_reward_metrics_and_lambda():
    *tensors, correct = _batch()
    _, m = rlmec_loss(*tensors, correct=correct, lam=2.0)
    assert m["reward_correct"].item() == pytest.approx((0.2 + 0.4 + 0.0) / 3)
    assert m["reward_wrong"].item() == pytest.approx((-0.1 - 0.05 + 0.0 - 0.02) / 4)
    assert m["tokens_correct"].item() == 3 and m["tokens_wrong"].item() == 4
    loss2, _ = rlmec_loss(*tensors, lam=2.0)
    total, l_rl, l_ir = _by_hand("nonzero", lam=2.0)
    assert loss2.item() == pytest.approx(l_rl + 2.0 * l_ir, rel=1e-6)


def test_gradient_is_weighted_logprob_gradient():
    """d L / d log π_θ(y_t) = −w_t / N_RL (ratios carry no gradient) and −ω_j / N_IR."""
    policy, ref, rewards, mask, rw_logps, rw_weights, rw_mask, _ = _batch()
    policy = policy.clone().requires_grad_(True)
    rw_logps = rw_logps.clone().requires_grad_(True)
    loss, _ = rlmec_loss(policy, ref, rewards, mask, rw_logps, rw_weights, rw_mask, normalizer="tokens")
    loss.backward()
    rho = torch.exp(policy.detach() - ref)
    w = torch.minimum(rho * rewards, rho.clamp(0.7, 1.3) * rewards) * mask
    assert torch.allclose(policy.grad, -w / 7, atol=1e-7)
    assert torch.allclose(rw_logps.grad, -(rw_weights * rw_mask) / 5, atol=1e-7)


def test_no_nonzero_reward_gives_zero_rl_term_and_bad_args():
    *tensors, correct = _batch()
    tensors[2] = torch.zeros_like(tensors[2])
    _, m = rlmec_loss(*tensors)
    assert m["loss_rl"].item() == 0.0 and m["clip_frac"].item() == 0.0
    with pytest.raises(ValueError, match="normalizer"):
        rlmec_loss(*tensors, normalizer="mean")
    with pytest.raises(ValueError, match="same shape"):
        rlmec_loss(tensors[0][:, :3], *tensors[1:])
