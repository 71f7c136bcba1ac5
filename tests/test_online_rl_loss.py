"""Online RL's pure functions against values computed by hand: advantages (GRPO, Dr. GRPO, RLOO, GAE),
the clipped surrogate with the k3 KL penalty under each aggregation, PPO's value loss, and the rewards."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms.advantages import gae, grpo_advantages, rloo_advantages, whiten, zero_advantage_groups
from algorithms.losses.policy_gradient import clipped_surrogate_loss, clipped_value_loss, k3_kl
from algorithms.rewards import needs_gold, reward_problems, score_completions
from reasoning.questions import record_from_dict

LOG = math.log


# ---------------------------------------------------------------- advantages
def test_grpo_mean_and_unbiased_std_per_group():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    adv = grpo_advantages(rewards)
    # group 1: mean 0.5, unbiased std sqrt(4 · 0.25 / 3) = sqrt(1/3); group 2: all equal -> 0
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert adv.tolist()[0] == pytest.approx([a, -a, -a, a], abs=1e-6)
    assert adv.tolist()[1] == [0.0, 0.0, 0.0, 0.0]
    assert zero_advantage_groups(rewards).tolist() == [False, True]


def test_dr_grpo_no_std_is_the_centred_reward():
    rewards = torch.tensor([[3.0, 1.0, 2.0]])
    assert grpo_advantages(rewards, scale_std=False).tolist() == [[1.0, -1.0, 0.0]]


def test_rloo_leave_one_out_baseline():
    rewards = torch.tensor([[1.0, 0.0, 0.0], [2.0, 4.0, 6.0]])
    # r_i − mean of the others: 1 − 0, 0 − 0.5, 0 − 0.5; 2 − 5, 4 − 4, 6 − 3
    assert rloo_advantages(rewards).tolist() == [[1.0, -0.5, -0.5], [-3.0, 0.0, 3.0]]
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.tensor([[1.0]]))


def test_gae_by_hand_with_padding_ignored():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.8, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # δ2 = 1 − 0.8 = 0.2; δ1 = 0.8 − 0.6 = 0.2, Â1 = 0.2 + 0.5·0.2; δ0 = 0.6 − 0.5, Â0 = 0.1 + 0.5·0.3
    assert adv.tolist()[0] == pytest.approx([0.25, 0.3, 0.2, 0.0], abs=1e-6)
    assert ret.tolist()[0] == pytest.approx([0.75, 0.9, 1.0, 0.0], abs=1e-6)
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    # λ = 1: Â_t = Σ γ^k r_{t+k} − V_t: 0.81 − 0.5, 0.9 − 0.6, 1 − 0.8
    assert adv.tolist()[0] == pytest.approx([0.31, 0.3, 0.2, 0.0], abs=1e-6)


def test_whiten_over_the_mask():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    out = whiten(x, torch.tensor([[1, 1, 0]]))
    assert out.tolist()[0] == pytest.approx([-1.0, 1.0, 0.0], abs=1e-6)  # mean 2, biased std 1


# ---------------------------------------------------------------- clipped surrogate + KL
def _batch():
    """Two completions: ratios 1.5 and 0.5 with Â = +1 (the first clipped at 1.2), ratio 1.1 with
    Â = −1 and one padded token; log π_ref − log π_θ = log 2, 0, −log 2 on the three tokens."""
    old = torch.tensor([[LOG(0.2), LOG(0.4)], [LOG(0.5), LOG(0.3)]])
    logps = (old + torch.tensor([[LOG(1.5), LOG(0.5)], [LOG(1.1), 5.0]])).requires_grad_(True)
    ref = logps.detach() + torch.tensor([[LOG(2.0), 0.0], [-LOG(2.0), 3.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    return logps, old, torch.tensor([1.0, -1.0]), mask, ref


def test_surrogate_sequence_token_and_constant_aggregation():
    logps, old, adv, mask, ref = _batch()
    # per-token pg: −min(1.5, 1.2) = −1.2, −min(0.5, 0.8) = −0.5; −min(−1.1, −1.1) = 1.1
    loss, m = clipped_surrogate_loss(logps, old, adv, mask, epsilon=0.2, aggregation="sequence")
    assert float(loss.detach()) == pytest.approx(((-1.2 - 0.5) / 2 + 1.1) / 2, abs=1e-6)
    assert float(m["clip_frac"]) == pytest.approx(1 / 3)
    assert float(m["ratio_mean"]) == pytest.approx((1.5 + 0.5 + 1.1) / 3, abs=1e-6)
    loss.backward()
    # d/dlogp of −ρ·Â = −ρ·Â where unclipped, 0 where the clipped branch is taken; × 1/(2·len)
    assert logps.grad.flatten().tolist() == pytest.approx([0.0, -0.5 / 4, 1.1 / 2, 0.0], abs=1e-6)
    loss, _ = clipped_surrogate_loss(logps, old, adv, mask, aggregation="token")
    assert float(loss.detach()) == pytest.approx((-1.2 - 0.5 + 1.1) / 3, abs=1e-6)
    loss, _ = clipped_surrogate_loss(logps, old, adv, mask, aggregation="constant", max_tokens=4)
    assert float(loss.detach()) == pytest.approx((-1.2 - 0.5 + 1.1) / (2 * 4), abs=1e-6)


def test_surrogate_k3_kl_penalty_and_clip_higher():
    logps, old, adv, mask, ref = _batch()
    k_up, k_down = 2 - LOG(2) - 1, 0.5 + LOG(2) - 1  # exp(d) − d − 1 at d = ±log 2
    assert k3_kl(torch.zeros(2), torch.tensor([LOG(2), -LOG(2)])).tolist() == pytest.approx([k_up, k_down])
    loss, m = clipped_surrogate_loss(logps, old, adv, mask, ref_logps=ref, beta=0.1)
    expected = ((-1.2 + 0.1 * k_up - 0.5) / 2 + (1.1 + 0.1 * k_down)) / 2
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-6)
    assert float(m["kl"]) == pytest.approx((k_up + k_down) / 3, abs=1e-6)  # = 0.5 / 3
    assert float(m["loss_pg"]) == pytest.approx(((-1.2 - 0.5) / 2 + 1.1) / 2, abs=1e-6)
    # DAPO clip-higher: ε_high = 0.6 lets ratio 1.5 through unclipped
    loss, m = clipped_surrogate_loss(
        logps, old, adv, mask, epsilon=0.2, epsilon_high=0.6, aggregation="token"
    )
    assert (
        float(loss.detach()) == pytest.approx((-1.5 - 0.5 + 1.1) / 3, abs=1e-6)
        and float(m["clip_frac"]) == 0.0
    )
    with pytest.raises(ValueError, match="needs ref_logps"):
        clipped_surrogate_loss(logps, old, adv, mask, beta=0.1)


def test_first_inner_pass_has_ratio_one_and_per_token_advantages():
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([[0.5, -2.0]])  # GAE-style per-token advantages
    loss, m = clipped_surrogate_loss(logps, logps.detach(), adv, torch.ones(1, 2), epsilon=0.2)
    assert float(loss.detach()) == pytest.approx((-0.5 + 2.0) / 2) and float(m["clip_frac"]) == 0.0
    loss.backward()
    assert logps.grad.tolist() == [[-0.25, 1.0]]


def test_clipped_value_loss_by_hand():
    mask = torch.ones(1, 2)
    loss, m = clipped_value_loss(
        torch.tensor([[1.0, 0.5]]), torch.tensor([[0.8, 0.5]]), torch.tensor([[0.0, 1.0]]), mask, clip=0.1
    )
    # V_clip = 0.9, 0.5: max(1, 0.81) and max(0.25, 0.25) -> ½ · (1 + 0.25) / 2
    assert float(loss.detach()) == pytest.approx(0.3125) and float(m["value_clip_frac"]) == 0.0
    loss, m = clipped_value_loss(
        torch.tensor([[0.5]]), torch.tensor([[0.8]]), torch.tensor([[0.0]]), mask[:, :1], clip=0.1
    )
    assert (
        float(loss.detach()) == pytest.approx(0.5 * 0.49) and float(m["value_clip_frac"]) == 1.0
    )  # V_clip = 0.7


# ---------------------------------------------------------------- rewards
def _record(answer: str = "42"):
    return record_from_dict({"question": "What is 6 times 7?", "answer": answer}, "t:1", "q-1", "arith")


def test_answer_match_format_and_weighted_sum():
    texts = ["6 times 7 is 42. The answer is 42.", "I think 42", "The answer is 41.", ""]
    total, parts = score_completions(texts, [_record()] * 4, {"answer_match": 1.0, "format": 0.5})
    assert parts["answer_match"].tolist() == [1.0, 1.0, 0.0, 0.0]  # the eval's "auto" extraction
    assert parts["format"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert total.tolist() == [1.5, 1.0, 0.5, 0.0]
    _, parts = score_completions(texts[:1], [_record()], {"format": 1.0})
    assert set(parts) == {"answer_match", "format"}  # answer match is reported even at weight 0


def test_grm_reward_is_the_mean_token_reward_signed_by_correctness():
    def scorer(records, texts):
        return [torch.tensor([1.0, 0.7]), torch.tensor([0.0, 0.45])]

    total, parts = score_completions(
        ["The answer is 42.", "The answer is 5."], [_record()] * 2, {"grm": 2.0}, grm_scorer=scorer
    )
    # correct: clip(p − 0.5, 0, 0.5) = 0.5, 0.2; wrong: clip(p − 0.5, −0.1, 0) = −0.1, −0.05
    assert parts["grm"].tolist() == pytest.approx([0.35, -0.075])
    assert total.tolist() == pytest.approx([0.7, -0.15])


def test_reward_config_problems():
    assert reward_problems({"answer_match": 1.0}) == []
    problems = reward_problems({"bleu": 0.0, "format": 0.0}, "fuzzy")
    assert len(problems) == 3 and "reward.weights.bleu" in problems[0]
    assert needs_gold({"answer_match": 1.0}) and not needs_gold({"format": 1.0, "answer_match": 0})
