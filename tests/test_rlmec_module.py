"""RLMECModule: the loss on a batch equals the pure loss on log-probs computed by hand, sample by sample
(no padding, no batching); the ablations; config errors; a few training steps that resume exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from algorithms.losses.rlmec import rlmec_loss
from tests.helpers import FAST, assert_bitwise_equal, compose_cfg, load_weights
from tests.rlmec_fixtures import rl_records, write_jsonl
from utils.errors import ConfigError

TINY = ["model=tiny", "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2"]


def compose(tmp_path: Path, data: Path, overrides: list[str] = ()):
    return compose_cfg(
        [*TINY, "module=rlmec", "data=rlmec", f"data.path={data}", "data.batch_size=4", *overrides], tmp_path
    )


@torch.no_grad()
def hand_logps(model: torch.nn.Module, prompt: list[int], response: list[int]) -> torch.Tensor:
    """log π(response_t | prompt, response_<t) from one unpadded forward of prompt + response."""
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0].float()
    logp = logits.log_softmax(-1)
    n = len(prompt)
    return torch.stack([logp[n + t - 1, tok] for t, tok in enumerate(response)])


def padded(rows: list[list[float]] | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    out, mask = torch.zeros(len(rows), width), torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.float32)
        mask[i, : len(r)] = True
    return out, mask


@pytest.fixture()
def setup(tmp_path, tokenizer):
    """A tiny module, and RL data whose ref_logps are the initial policy's own log-probs shifted by
    ±0.4 on alternate tokens (so ratios leave [0.7, 1.3] and the clipped branches are taken)."""
    rows = rl_records(tokenizer, 4)
    cfg = compose(tmp_path, tmp_path / "rl.jsonl")
    torch.manual_seed(0)
    module = instantiate(cfg.module)
    module.configure_model()
    module.model.eval()
    for r in rows:
        own = hand_logps(module.model, r["prompt_ids"], r["response_ids"])
        r["ref_logps"] = [float(v) + (0.4 if t % 2 else -0.4) for t, v in enumerate(own)]
    write_jsonl(tmp_path / "rl.jsonl", rows)
    dm = instantiate(cfg.data)
    dm.shuffle = False
    dm.setup("fit")
    return module, dm, rows


@pytest.mark.parametrize("normalizer", ["nonzero", "tokens"])
def test_batch_loss_equals_pure_loss_on_hand_logprobs(setup, normalizer):
    module, dm, rows = setup
    module.normalizer = normalizer
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        loss, metrics = module.compute_loss(batch)
    policy, mask = padded([hand_logps(module.model, r["prompt_ids"], r["response_ids"]) for r in rows])
    rewrite, rmask = padded([hand_logps(module.model, r["prompt_ids"], r["rewrite_ids"]) for r in rows])
    ref, _ = padded([r["ref_logps"] for r in rows])
    rewards, _ = padded([r["rewards"] for r in rows])
    weights, _ = padded([r["weights"] for r in rows])
    correct = torch.tensor([r["correct"] for r in rows])
    expected, exp_m = rlmec_loss(
        policy, ref, rewards, mask, rewrite, weights, rmask, correct=correct, normalizer=normalizer
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for key in ("loss_rl", "loss_ir", "clip_frac", "nonzero_reward_frac", "reward_correct", "reward_wrong"):
        assert metrics[key].item() == pytest.approx(exp_m[key].item(), rel=1e-5, abs=1e-7), key
    assert 0 < metrics["clip_frac"].item() < 1
    assert metrics["reward_correct"].item() > 0 > metrics["reward_wrong"].item()


def test_ablations_sequence_rewards_and_no_ir(setup):
    module, dm, rows = setup
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        module.lam = 0.0
        loss_no_ir, m = module.compute_loss(batch)
        assert loss_no_ir.item() == pytest.approx(m["loss_rl"].item(), rel=1e-6)
        module.lam, module.reward_mode = 1.0, "sequence"
        _, m_seq = module.compute_loss(batch)
    # every token of a sample carries the sample's mean reward: the token-weighted means per class
    # equal the plain token means, and the clip/ratio machinery sees the broadcast value
    for flag, key in ((True, "reward_correct"), (False, "reward_wrong")):
        chosen = [r for r in rows if r["correct"] == flag]
        mean = sum(sum(r["rewards"]) for r in chosen) / sum(len(r["rewards"]) for r in chosen)
        assert m_seq[key].item() == pytest.approx(mean, rel=1e-5)
    assert m_seq["loss_rl"].item() != pytest.approx(m["loss_rl"].item(), rel=1e-3)
    assert m_seq["nonzero_reward_frac"].item() == 1.0  # every sample here has some non-zero reward


def test_config_errors_are_listed_together(tmp_path):
    from hydra.errors import InstantiationException

    cfg = compose(
        tmp_path, tmp_path / "x.jsonl", ["module.normalizer=mean", "module.reward_mode=seq", "module.lam=-1"]
    )
    with pytest.raises(InstantiationException) as e:
        instantiate(cfg.module)
    assert isinstance(e.value.__cause__, ConfigError)
    text = str(e.value.__cause__)
    assert "normalizer='mean'" in text and "reward_mode='seq'" in text and "lam=-1" in text


def run_train(out: Path, data: Path, overrides: list[str]) -> dict:
    from train import train

    cfg = compose(out, data, ["debug=default", "logger=csv", "data.batch_size=2", *FAST, *overrides])
    train(cfg)
    return json.loads((out / "summary.json").read_text())


def test_a_few_steps_train_and_resume_exactly(tmp_path, tokenizer):
    data = write_jsonl(tmp_path / "rl.jsonl", rl_records(tokenizer, 6))
    common = [
        "trainer.max_steps=4",
        "trainer.max_epochs=2",  # 3 batches an epoch: the resume crosses an epoch boundary
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "module.optimizer.lr=1e-3",
    ]
    full = run_train(tmp_path / "full", data, common)
    assert full["global_step"] == 4
    for key in (
        "train/loss",
        "train/loss_rl",
        "train/loss_ir",
        "train/clip_frac",
        "train/nonzero_reward_frac",
    ):
        assert key in full["metrics"], key
    crash = ["+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=2"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_train(tmp_path / "half", data, [*common, *crash])
    resumed = run_train(tmp_path / "half", data, [*common, "ckpt_path=last"])
    assert resumed["global_step"] == 4
    assert_bitwise_equal(
        load_weights(tmp_path / "full" / "checkpoints" / "last.ckpt"),
        load_weights(tmp_path / "half" / "checkpoints" / "last.ckpt"),
    )
