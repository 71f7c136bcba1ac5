"""OnlineRLModule under DDP and FSDP2 on 2 CPU processes (subprocesses of train.py; never inside pytest).
GRPO (μ = 2) under DDP with the shared prefix and under FSDP2 with its padded-row fallback: the ranks stay
bitwise equal, the weights move, a resume from step 2 exports bitwise the same policy, and DDP's shared
prefix and padded rows train the same weights to 1e-5 (see the section below). PPO under FSDP2 with
its value head and μ = 2 inner passes. A copy of the run resumes from its step-2 sharded checkpoint and
must end bitwise where the uninterrupted run ended: the exported policy, and the value head (sharded with
the policy, saved in the checkpoint, trained) in ``last.ckpt``.

A random tiny policy almost never answers right, so every reward is 0; with the value head's zero
initialisation every advantage and value target would then be 0 and nothing would train. The run starts
its value head at V = 0.5 instead (:class:`ValueHeadStart`): GAE's last-token error is then −0.5, so the
policy and the value head both get gradients."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.fsdp_helpers import REWRITTEN, assert_same_export, sharded_checkpoint, summary
from tests.helpers import FAST, assert_bitwise_equal, run_script
from tests.test_online_rl_module import write_questions

TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2"]


class ValueHeadStart(L.Callback):
    """Sets the PPO value head's bias to ``bias`` before the first step of a fresh run (not on resume)."""

    def __init__(self, bias: float):
        self.bias = bias

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            with torch.no_grad():
                module.value_head.bias.fill_(self.bias)


def value_head(run: Path) -> dict[str, torch.Tensor]:
    """The value head's tensors in ``<run>/checkpoints/last.ckpt`` (a sharded folder), whole."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = run / "last_consolidated.pt"
    dcp_to_torch_save(run / "checkpoints" / "last.ckpt", out)
    state = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if "value_head" in k}


@pytest.mark.slow
def test_ppo_value_head_with_two_inner_passes_under_fsdp_resumes_exactly(tmp_path: Path):
    data = write_questions(tmp_path / "questions.jsonl")
    args = [
        "experiment=ppo_tiny",
        *TINY,
        f"data.path={data}",
        "data.batch_size=2",  # per rank: 2 prompts, 1 completion each
        "module.sampling.max_new_tokens=8",
        "module.inner_steps=2",  # μ: each batch is 2 optimiser steps
        "module.optimizer.lr=1e-2",
        "trainer=fsdp",
        "trainer.devices=2",
        "trainer.max_steps=4",  # 2 batches
        "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "debug=default",
        "logger=csv",
        "export=true",
        "+callbacks.value_start._target_=tests.test_online_rl_distributed.ValueHeadStart",
        "+callbacks.value_start.bias=0.5",
        *FAST,
    ]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    first = run_script("train.py", [*args, f"hydra.run.dir={full}"])
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(full, resumed, ignore=shutil.ignore_patterns(*REWRITTEN))
    ckpt = sharded_checkpoint(resumed, 2)
    second = run_script("train.py", [*args, f"ckpt_path={ckpt}", f"hydra.run.dir={resumed}"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert summary(full)["global_step"] == summary(resumed)["global_step"] == 4
    assert summary(resumed)["steps_this_run"] == 2  # optimiser steps: one batch of two inner passes
    assert_same_export(full / "hf_model", resumed / "hf_model")
    heads = value_head(full), value_head(resumed)
    assert sorted(heads[0]) == ["value_head.bias", "value_head.weight"]
    for name, tensor in heads[0].items():
        assert not torch.equal(tensor, torch.full_like(tensor, 0.5 if "bias" in name else 0.0)), name
        assert torch.equal(tensor, heads[1][name]), f"{name} differs after the resume"


# ---------------------------------------------------------------- GRPO under DDP and FSDP2
# GRPO with its shared prefix (DDP) and with the padded-row fallback (FSDP2, ``fsdp_sharded``), μ = 2.
# A random tiny policy's answer_match reward is 0 in every group (no advantage, nothing trains), so these
# runs score completions by their length instead (:class:`LengthReward`): every group has a spread.
GRPO = [
    "experiment=grpo_tiny",
    *TINY,
    "data.batch_size=2",  # per rank: 2 prompts × G = 4 completions
    "module.sampling.max_new_tokens=8",
    "module.inner_steps=2",  # μ: each batch is 2 optimiser steps (two backwards per DDP forward)
    "module.optimizer.lr=1e-3",
    "trainer.devices=2",
    "trainer.max_steps=4",  # 2 batches
    "trainer.limit_val_batches=0",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "debug=default",
    "logger=csv",
    "export=true",
    "+callbacks.length_reward._target_=tests.test_online_rl_distributed.LengthReward",
    "+callbacks.rank_weights._target_=tests.test_online_rl_distributed.RankWeights",
    "+callbacks.rank_weights.folder=${paths.output_dir}",
    *FAST,
]


def length_reward(texts, records, weights, extraction_mode="auto", grm_scorer=None):  # noqa: ANN001, ANN201
    """``score_completions``'s stand-in: a completion's reward is its length in characters / 8."""
    rewards = torch.tensor([len(t) / 8 for t in texts], dtype=torch.float32)
    return rewards, {"length": rewards}


class LengthReward(L.Callback):
    """Test-only: the online-RL module scores completions with :func:`length_reward` during the run."""

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        import lightning_modules.online_rl as online_rl

        self.real = online_rl.score_completions
        online_rl.score_completions = length_reward

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        import lightning_modules.online_rl as online_rl

        online_rl.score_completions = self.real


class RankWeights(L.Callback):
    """Saves every rank's whole policy weights to ``<folder>/{start,end}_rank<r>.pt``: at the start of a
    fresh run and at the end of every run (FSDP2 shards are gathered: every rank takes part)."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def save(self, trainer: L.Trainer, module: L.LightningModule, name: str) -> None:
        from torch.distributed.tensor import DTensor

        state = {
            k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
            for k, v in module.model.state_dict().items()
        }
        torch.save(state, self.folder / f"{name}_rank{trainer.global_rank}.pt")

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            self.save(trainer, module, "start")

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.save(trainer, module, "end")


def rank_weights(run: Path, name: str, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(run / f"{name}_rank{rank}.pt", map_location="cpu", weights_only=True)


def grpo_run(root: Path, name: str, args: list[str], ckpt: Path | None = None) -> Path:
    """``train.py`` with ``args`` in ``root/name`` (resumed from ``ckpt`` when given)."""
    out = root / name
    extra = [] if ckpt is None else [f"ckpt_path={ckpt}"]
    proc = run_script("train.py", [*args, *extra, f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def resume_copy(full: Path, name: str, args: list[str], ckpt_name: str) -> Path:
    """A copy of ``full`` (without what a run rewrites) continued from its step-2 checkpoint."""
    copy = full.parent / name
    shutil.copytree(full, copy, ignore=shutil.ignore_patterns(*REWRITTEN, "end_rank*.pt"))
    return grpo_run(full.parent, name, args, copy / "checkpoints" / ckpt_name)


def assert_moved(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor]) -> None:
    """Every policy tensor left its initial value (the GRPO gradient reached the whole model)."""
    assert start.keys() == end.keys() and start
    still = [k for k in start if torch.equal(start[k], end[k])]
    assert not still, f"never updated: {still}"


@pytest.fixture(scope="module")
def ddp_grpo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """GRPO under DDP: the shared-prefix run, its resume from step 2, and the padded-row run."""
    root = tmp_path_factory.mktemp("ddp_grpo")
    args = [*GRPO, "trainer=ddp", f"data.path={write_questions(root / 'questions.jsonl')}"]
    full = grpo_run(root, "full", args)
    return {
        "full": full,
        "resumed": resume_copy(full, "resumed", args, "step000002.ckpt"),
        "padded": grpo_run(root, "padded", [*args, "module.shared_prefix=false"]),
    }


@pytest.mark.slow
def test_grpo_under_ddp_keeps_the_ranks_equal_and_resumes_exactly(ddp_grpo: dict[str, Path]):
    full, resumed = ddp_grpo["full"], ddp_grpo["resumed"]
    start, end = rank_weights(full, "start", 0), rank_weights(full, "end", 0)
    assert_bitwise_equal(start, rank_weights(full, "start", 1))  # DDP broadcasts rank 0's weights
    assert_bitwise_equal(end, rank_weights(full, "end", 1))  # ranks saw other prompts: gradients synced
    assert_moved(start, end)
    assert summary(resumed)["global_step"] == 4 and summary(resumed)["steps_this_run"] == 2
    assert_bitwise_equal(end, rank_weights(resumed, "end", 1))
    assert_same_export(full / "hf_model", resumed / "hf_model")


@pytest.mark.slow
def test_grpo_shared_prefix_and_padded_rows_train_the_same_under_ddp(ddp_grpo: dict[str, Path]):
    shared, padded = rank_weights(ddp_grpo["full"], "end", 0), rank_weights(ddp_grpo["padded"], "end", 0)
    assert_bitwise_equal(
        rank_weights(ddp_grpo["padded"], "end", 0), rank_weights(ddp_grpo["padded"], "end", 1)
    )
    assert shared.keys() == padded.keys()
    # two code paths (other reduction orders), not one path twice: the comparison is not vacuous
    assert any(not torch.equal(shared[k], padded[k]) for k in shared)
    for k in shared:
        assert torch.allclose(shared[k], padded[k], rtol=0, atol=1e-5), k


@pytest.mark.slow
def test_rloo_under_ddp_keeps_the_ranks_equal_and_resumes_exactly(tmp_path: Path):
    """RLOO's leave-one-out advantages (module.advantage=rloo) on the GRPO runs' settings."""
    args = [
        *GRPO,
        "module.advantage=rloo",
        "trainer=ddp",
        f"data.path={write_questions(tmp_path / 'questions.jsonl')}",
    ]
    full = grpo_run(tmp_path, "full", args)
    assert (full / ".hydra" / "config.yaml").read_text().count("advantage: rloo") == 1
    resumed = resume_copy(full, "resumed", args, "step000002.ckpt")
    start, end = rank_weights(full, "start", 0), rank_weights(full, "end", 0)
    assert_bitwise_equal(end, rank_weights(full, "end", 1))
    assert_moved(start, end)
    assert summary(resumed)["global_step"] == 4 and summary(resumed)["steps_this_run"] == 2
    assert_bitwise_equal(end, rank_weights(resumed, "end", 0))
    assert_same_export(full / "hf_model", resumed / "hf_model")


@pytest.mark.slow
def test_grpo_under_fsdp_with_padded_rows_resumes_exactly(tmp_path: Path):
    args = [*GRPO, "trainer=fsdp", f"data.path={write_questions(tmp_path / 'questions.jsonl')}"]
    full = grpo_run(tmp_path, "full", args)
    resumed = resume_copy(full, "resumed", args, sharded_checkpoint(full, 2).name)
    assert summary(resumed)["global_step"] == 4 and summary(resumed)["steps_this_run"] == 2
    assert_moved(rank_weights(full, "start", 0), rank_weights(full, "end", 0))
    assert_same_export(full / "hf_model", resumed / "hf_model")
