"""RLMECModule under DDP and FSDP2 on 2 CPU processes (subprocesses of train.py; never inside pytest).
Under FSDP2 with both switches on (activation checkpointing per block, bf16 compute over fp32 params),
a copy of the run resumes from its step-2 sharded checkpoint and exports the same weights, bit for bit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.fsdp_helpers import assert_same_export, summary, train_then_resume_from_copy
from tests.helpers import run_script
from tests.rlmec_fixtures import rl_records, write_jsonl

TINY = ["model=tiny", "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2"]


def _args(tmp_path: Path, tokenizer, strategy: str) -> list[str]:
    data = write_jsonl(tmp_path / "rl.jsonl", rl_records(tokenizer, 8))
    return [
        *TINY,
        "module=rlmec",
        "data=rlmec",
        f"data.path={data}",
        "data.batch_size=2",
        f"trainer={strategy}",
        "trainer.devices=2",
        "debug=default",
        "trainer.limit_val_batches=0",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "print_config=false",
    ]


def _assert_trained(run: Path) -> None:
    s = summary(run)
    assert math.isfinite(s["first_step_loss"]) and math.isfinite(s["last_step_loss"])
    assert "train/loss_rl" in s["metrics"] and "train/clip_frac" in s["metrics"]


@pytest.mark.slow
def test_rlmec_trains_under_ddp(tmp_path: Path, tokenizer):
    out = tmp_path / "run"
    proc = run_script("train.py", [*_args(tmp_path, tokenizer, "ddp"), f"hydra.run.dir={out}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary(out)["global_step"] == 2
    _assert_trained(out)
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_rlmec_under_fsdp_with_checkpointing_and_bf16_resumes_exactly(tmp_path: Path, tokenizer):
    args = [
        *_args(tmp_path, tokenizer, "fsdp"),
        "trainer.max_steps=4",
        "trainer.max_epochs=2",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "export=true",
        "model.gradient_checkpointing=true",
        "module.fsdp_param_dtype=bfloat16",
    ]
    full, resumed = train_then_resume_from_copy(tmp_path, args, step=2)
    _assert_trained(full)
    weights = assert_same_export(full / "hf_model", resumed / "hf_model")
    assert all(w.dtype == torch.float32 for w in weights.values())  # bf16 compute, fp32 weights
