"""OnlineRLModule (GRPO, RLOO, PPO) on the tiny model: rollout tensors score exactly the sampled tokens,
the sampling stream is a function of (seed, prompt id, rollout counter), a few steps train and resume
bitwise from a mid-run checkpoint, config and data errors are reported at start-up."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from algorithms.logprobs import model_token_logprobs
from algorithms.rollouts import last_token_rewards, rollout_tensors
from datamodules.reasoning_prompts import ReasoningPromptDataModule
from tests.helpers import FAST, ROOT, assert_bitwise_equal, compose_cfg, crash_at, load_weights
from utils.errors import ConfigError, DataError

TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2"]


def write_questions(path: Path, n: int = 8) -> Path:
    """Sums of small numbers: a random tiny policy's last number sometimes matches, so groups differ."""
    with path.open("w") as f:
        for i in range(n):
            a, b = i % 4, (i * 3) % 5
            f.write(
                json.dumps({"id": f"q{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
            )
    return path


def compose(tmp_path: Path, overrides: list[str] = ()):
    data = write_questions(tmp_path / "questions.jsonl")
    return compose_cfg(
        [
            "experiment=grpo_tiny",
            *TINY,
            f"data.path={data}",
            "data.batch_size=2",
            "module.sampling.max_new_tokens=16",
            *overrides,
        ],
        tmp_path / "out",
    )


# ---------------------------------------------------------------- pure pieces
def test_rollout_tensors_label_exactly_the_completion_tokens():
    t = rollout_tensors([[5, 6], [7]], [[[8, 2], [9]], [[3, 4, 2], [1]]], pad_id=0)
    assert t.input_ids.tolist() == [[5, 6, 8, 2], [5, 6, 9, 0], [7, 3, 4, 2], [7, 1, 0, 0]]
    assert t.labels.tolist() == [
        [-100, -100, 8, 2],
        [-100, -100, 9, -100],
        [-100, 3, 4, 2],
        [-100, 1, -100, -100],
    ]
    assert t.completion_lengths.tolist() == [2, 1, 3, 1] and t.num_tokens == 13
    mask = t.labels[:, 1:].ne(-100)
    assert last_token_rewards(torch.tensor([1.0, 2.0, 3.0, 4.0]), mask).tolist() == [
        [0, 0, 1.0],
        [0, 2.0, 0],
        [0, 0, 3.0],
        [4.0, 0, 0],
    ]


def test_policy_logps_of_a_rollout_equal_one_unpadded_forward_per_row(tmp_path, tokenizer):
    cfg = compose(tmp_path)
    torch.manual_seed(0)
    module = instantiate(cfg.module)
    module.configure_model()
    module.model.eval()
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batch = dm.collate([dm.train_dataset[0], dm.train_dataset[1]])
    prompts, completions, _ = module.generate(batch, 3)
    assert len(completions) == 2 and all(len(g) == 3 for g in completions)
    t = rollout_tensors(prompts, completions, tokenizer.pad_token_id)
    logp, mask = model_token_logprobs(module.model, t.input_ids, t.attention_mask, t.labels)
    rows = [(p, c) for p, g in zip(prompts, completions) for c in g]
    for i, (p, c) in enumerate(rows):
        with torch.no_grad():
            full = module.model(input_ids=torch.tensor([p + c])).logits[0].float().log_softmax(-1)
        hand = torch.stack([full[len(p) + k - 1, tok] for k, tok in enumerate(c)])
        assert torch.allclose(logp[i][mask[i]], hand, atol=1e-5)
    # the stream: the same counter draws the same completions, the next counter new ones
    again = module.generate(batch, 3)[1]
    module.rollouts_done += 1
    assert again == completions and module.generate(batch, 3)[1] != completions


# ---------------------------------------------------------------- training and resume
def run(tmp_path: Path, name: str, overrides: list[str]) -> dict:
    from train import train

    cfg = compose(tmp_path, ["debug=default", "logger=csv", "export=false", *FAST, *overrides])
    cfg.paths.output_dir = str(tmp_path / name)
    return train(cfg)


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "csv" / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("train/loss")]


def test_grpo_trains_and_resumes_bitwise_from_a_mid_run_checkpoint(tmp_path):
    common = ["trainer.max_steps=4", "callbacks.model_checkpoint.every_n_train_steps=2", "seed=3"]
    run(tmp_path, "full", common)
    logged = rows(tmp_path / "full")
    assert [int(r["step"]) for r in logged] == [0, 1, 2, 3]
    for r in logged:
        assert 0 <= float(r["train/zero_adv_frac"]) <= 1 and float(r["train/gen_tokens_per_s"]) > 0
        assert float(r["train/reward_mean"]) == float(r["train/reward_answer_match"])
        assert 1 <= float(r["train/completion_len"]) <= 16
    assert any(float(r["train/zero_adv_frac"]) < 1 for r in logged)  # some group had a reward spread
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "half", [*common, *crash_at(2)])
    run(tmp_path, "half", [*common, "ckpt_path=last"])
    full, half = tmp_path / "full" / "checkpoints", tmp_path / "half" / "checkpoints"
    assert torch.load(half / "last.ckpt", weights_only=True)["online_rl"]["rollouts_done"] == 4
    assert_bitwise_equal(load_weights(full / "last.ckpt"), load_weights(half / "last.ckpt"))
    assert not torch.equal(load_weights(full / "step000002.ckpt")["model.model.embed_tokens.weight"],
                           load_weights(full / "last.ckpt")["model.model.embed_tokens.weight"])  # fmt: skip


def test_a_crash_right_after_a_checkpoint_keeps_that_steps_csv_row(tmp_path):
    """Lightning logs a step's row after the step's checkpoints: a crash (or ``kill -9``) in between
    must not lose it (``callbacks/checkpoint.log_row_before_checkpoint``)."""
    common = ["trainer.max_steps=4", "callbacks.model_checkpoint.every_n_train_steps=2", "seed=3"]
    run(tmp_path, "full", common)
    crash = [
        "+callbacks.crash._target_=tests.hardening_helpers.CrashAfterLastCheckpoint",
        "+callbacks.crash.step=2",
    ]
    with pytest.raises(RuntimeError, match="simulated crash after last.ckpt"):
        run(tmp_path, "half", [*common, *crash])
    assert [r["step"] for r in rows(tmp_path / "half")] == ["0", "1"]  # step 1's row went out first
    run(tmp_path, "half", [*common, "ckpt_path=last"])
    wall = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rs]  # noqa: E731
    assert wall(rows(tmp_path / "half")) == wall(rows(tmp_path / "full"))  # every step once, equal values


@pytest.mark.parametrize("advantage", ["rloo", "ppo"])
def test_rloo_and_ppo_steps(tmp_path, advantage):
    extra = ["module.inner_steps=2", "trainer.max_steps=4"] if advantage == "ppo" else ["trainer.max_steps=2"]
    run(
        tmp_path, advantage, [f"module.advantage={advantage}", "seed=3", *extra]
    )  # seed 3: a reward at batch 1
    logged = rows(tmp_path / advantage)
    assert logged and all(float(r["train/loss"]) == float(r["train/loss"]) for r in logged)  # finite
    if advantage == "ppo":  # μ = 2: each batch makes two optimiser steps; the second pass has ratio ≠ 1
        assert [int(r["step"]) for r in logged] == [0, 1] and float(logged[1]["train/reward_mean"]) > 0
        assert float(logged[1]["train/value_loss"]) > 0 and float(logged[1]["train/ratio_mean"]) != 1.0


# ---------------------------------------------------------------- bad config and data
def test_config_errors_are_listed_together(tmp_path):
    cfg = compose(
        tmp_path,
        [
            "module.advantage=a2c",
            "module.num_generations=1",
            "module.aggregation=mean",
            "module.sampling.temperature=0",
            "+reward.weights.bleu=1.0",
        ],
    )
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException) as e:
        instantiate(cfg.module)
    assert isinstance(e.value.__cause__, ConfigError)
    text = str(e.value.__cause__)
    for needle in (
        "module.advantage='a2c'",
        "module.num_generations=1",
        "module.aggregation='mean'",
        "temperature must be > 0",
        "reward.weights.bleu",
    ):
        assert needle in text, text


def test_prompts_without_gold_fail_under_answer_match_and_load_under_format(tmp_path, tokenizer):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n{"question": "What is 2 + 5?"}\n')
    common = {"path": str(path), "tokenizer": str(ROOT / "assets" / "tokenizer"), "batch_size": 2}
    with pytest.raises(DataError, match=r"q.jsonl:2: missing field 'answer': the reward"):
        ReasoningPromptDataModule(**common).setup("fit")
    dm = ReasoningPromptDataModule(**common, require_gold=False)
    dm.setup("fit")
    assert [r.gold for r in dm.records] == ["2", ""]
