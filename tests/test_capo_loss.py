"""The CaPO loss on hand-built log-prob tensors equals its formula (METHODS.md §1)."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms.losses.capo import capo_loss

# Two pairs: policy / reference sequence log-probs of the chosen and rejected answers.
PC = torch.tensor([-10.0, -4.0])
PR = torch.tensor([-12.0, -3.0])
RC = torch.tensor([-11.0, -5.0])
RR = torch.tensor([-11.5, -2.0])


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_sigmoid_loss_and_rewards_equal_the_formula():
    beta = 0.5
    loss, m = capo_loss(PC, PR, RC, RR, beta=beta)
    expected = []
    for pc, pr, rc, rr in zip(PC.tolist(), PR.tolist(), RC.tolist(), RR.tolist()):
        z = beta * ((pc - rc) - (pr - rr))
        expected.append(-math.log(sigmoid(z)))
    assert loss.item() == pytest.approx(sum(expected) / 2, abs=1e-6)
    assert m["losses"].tolist() == pytest.approx(expected, abs=1e-6)
    # r_w = β(π_w − ref_w): pair 0: 0.5·(−10+11) = 0.5; pair 1: 0.5·(−4+5) = 0.5
    assert m["rewards/chosen"].tolist() == pytest.approx([0.5, 0.5])
    # r_l: pair 0: 0.5·(−12+11.5) = −0.25; pair 1: 0.5·(−3+2) = −0.5
    assert m["rewards/rejected"].tolist() == pytest.approx([-0.25, -0.5])
    assert m["rewards/margins"].tolist() == pytest.approx([0.75, 1.0])
    assert m["rewards/accuracies"].tolist() == [1.0, 1.0]
    assert m["logps/chosen"].tolist() == PC.tolist()
    assert m["logps/rejected"].tolist() == PR.tolist()


def test_policy_equal_to_reference_gives_ln2_and_zero_rewards():
    logps = torch.tensor([-7.25, -30.5, -1.0])
    other = torch.tensor([-9.0, -2.0, -4.5])
    loss, m = capo_loss(logps, other, logps.clone(), other.clone(), beta=0.1)
    assert abs(loss.item() - math.log(2)) < 1e-6
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert m[key].abs().max().item() == 0.0
    assert m["rewards/accuracies"].sum().item() == 0.0  # a tie is not a win (as in TRL)


def test_label_smoothing_is_conservative_dpo():
    beta, eps = 0.2, 0.1
    loss, _ = capo_loss(PC, PR, RC, RR, beta=beta, label_smoothing=eps)
    expected = []
    for pc, pr, rc, rr in zip(PC.tolist(), PR.tolist(), RC.tolist(), RR.tolist()):
        z = beta * ((pc - rc) - (pr - rr))
        expected.append(-(1 - eps) * math.log(sigmoid(z)) - eps * math.log(sigmoid(-z)))
    assert loss.item() == pytest.approx(sum(expected) / 2, abs=1e-6)


def test_ipo_sequence_and_per_token_forms():
    beta = 0.25
    loss, _ = capo_loss(PC, PR, RC, RR, beta=beta, loss_type="ipo")
    h = [(pc - rc) - (pr - rr) for pc, pr, rc, rr in zip(PC.tolist(), PR.tolist(), RC.tolist(), RR.tolist())]
    assert loss.item() == pytest.approx(sum((x - 1 / (2 * beta)) ** 2 for x in h) / 2, abs=1e-5)
    lc, lr = torch.tensor([2.0, 4.0]), torch.tensor([5.0, 1.0])
    loss_t, _ = capo_loss(PC, PR, RC, RR, beta=beta, loss_type="ipo", chosen_lengths=lc, rejected_lengths=lr)
    h_t = [
        (pc - rc) / a - (pr - rr) / b
        for pc, pr, rc, rr, a, b in zip(
            PC.tolist(), PR.tolist(), RC.tolist(), RR.tolist(), lc.tolist(), lr.tolist()
        )
    ]
    assert loss_t.item() == pytest.approx(sum((x - 1 / (2 * beta)) ** 2 for x in h_t) / 2, abs=1e-5)


def test_hinge_loss():
    beta = 2.0
    loss, m = capo_loss(PC, PR, RC, RR, beta=beta, loss_type="hinge")
    # βΔ: pair 0: 2·1.5 = 3 → 0; pair 1: 2·2 = 4 → 0; flip the pairs to make it active
    assert loss.item() == 0.0
    loss2, m2 = capo_loss(PR, PC, RR, RC, beta=0.1, loss_type="hinge")
    assert m2["losses"].tolist() == pytest.approx([1 + 0.1 * 1.5, 1 + 0.1 * 2.0])


def test_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    loss, _ = capo_loss(pc, pr, RC, RR, beta=0.1)
    loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()
    # d(−log σ(z))/d π_w = −β σ(−z) / B
    z = 0.1 * ((PC - RC) - (PR - RR))
    assert torch.allclose(pc.grad, -0.1 * torch.sigmoid(-z) / 2, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_type": "kto"}, "loss_type"),
        ({"beta": 0.0}, "beta"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "applies to"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        capo_loss(PC, PR, RC, RR, **kwargs)
