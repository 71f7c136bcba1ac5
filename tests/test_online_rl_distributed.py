"""OnlineRLModule under FSDP2 on 2 CPU processes (subprocesses of train.py; never inside pytest): PPO with
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
from tests.helpers import FAST, run_script
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
    assert summary(resumed)["steps_this_run"] == 1  # counts batches: one batch of μ = 2 optimiser steps
    assert_same_export(full / "hf_model", resumed / "hf_model")
    heads = value_head(full), value_head(resumed)
    assert sorted(heads[0]) == ["value_head.bias", "value_head.weight"]
    for name, tensor in heads[0].items():
        assert not torch.equal(tensor, torch.full_like(tensor, 0.5 if "bias" in name else 0.0)), name
        assert torch.equal(tensor, heads[1][name]), f"{name} differs after the resume"
