"""Online RLMEC: the per-round rewrite targets and token fields by hand, and two rounds of
OnlineRLMECModule on the tiny model with a tiny (random) GRM sharing its tokenizer."""

from __future__ import annotations

import csv

import pytest
import torch

from algorithms.minimum_edit import EditResult
from algorithms.online_rlmec import rewrite_targets, scatter_rows, token_fields
from tests.helpers import FAST, compose_cfg
from tests.test_online_rl_module import TINY, write_questions


def test_rewrite_targets_token_fields_and_scatter_by_hand():
    responses = [[5, 6, 2], [7, 8], [3]]
    results = [
        EditResult("identity", rewrite="x"),
        EditResult("rewritten", rewrite="y"),
        EditResult("dropped", reason="no_answer"),
    ]
    targets = rewrite_targets(responses, results, encode=lambda text: {"y": [7, 9]}[text])
    assert targets == [[5, 6, 2], [7, 9], []]
    probs = [torch.tensor([1.0, 0.7, 0.5]), torch.tensor([0.0, 0.45]), torch.tensor([0.9])]
    rewards, weights = token_fields(responses, targets, [True, False, False], probs)
    # correct: clip(p − 0.5, 0, 0.5); wrong: clip(p − 0.5, −0.1, 0)
    assert [r.tolist() for r in rewards] == [
        pytest.approx([0.5, 0.2, 0.0]),
        pytest.approx([-0.1, -0.05]),
        [0.0],
    ]
    # correct: every token kept (0.5); the rewrite 7 9 of 7 8: token 9 edited (1.0); no rewrite: none
    assert [w.tolist() for w in weights] == [[0.5, 0.5, 0.5], [0.5, 1.0], []]
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    placed = scatter_rows(rewards, mask)
    assert placed.tolist() == [
        pytest.approx([0, 0.5, 0.2, 0]),
        pytest.approx([0, 0, -0.1, -0.05]),
        [0, 0, 0, 0],
    ]
    with pytest.raises(ValueError, match="masked positions"):
        scatter_rows(rewards[:2], mask[1:])


def test_two_online_rounds_train_on_grm_rewards(tmp_path, tiny_hf_dir):
    from train import train

    data = write_questions(tmp_path / "questions.jsonl")
    cfg = compose_cfg(
        [
            "experiment=rlmec_online_tiny",
            "model=tiny",
            *TINY,
            f"module.grm.path={tiny_hf_dir}",
            "module.grm.max_new_tokens=8",
            "module.sampling.max_new_tokens=12",
            "module.num_generations=2",
            f"data.path={data}",
            "data.batch_size=2",
            "debug=default",
            "logger=csv",
            "export=false",
            *FAST,
        ],
        tmp_path / "out",
    )
    train(cfg)
    with open(tmp_path / "out" / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [0, 1]
    for r in rows:  # a random GRM gives the policy's tokens p ≈ 1/|V|: every wrong token earns −0.1,
        # every correct one 0
        assert float(r["train/reward_wrong"]) == pytest.approx(-0.1, abs=1e-3)
        all_wrong = float(r["train/reward_mean"]) == 0
        assert (
            float(r["train/nonzero_reward_frac"]) == 1.0
            if all_wrong
            else 0 < float(r["train/nonzero_reward_frac"]) < 1
        )
        assert float(r["train/loss_rl"]) != 0
    assert float(rows[1]["train/ratio_mean"]) != 1.0  # round 2 samples from the updated policy
