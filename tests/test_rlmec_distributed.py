"""RLMECModule under DDP and FSDP2 on 2 CPU processes (subprocesses of train.py; never inside pytest)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import run_script
from tests.rlmec_fixtures import rl_records, write_jsonl

TINY = ["model=tiny", "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_rlmec_trains_on_two_processes(tmp_path: Path, tokenizer, strategy: str):
    out = tmp_path / "run"
    data = write_jsonl(tmp_path / "rl.jsonl", rl_records(tokenizer, 8))
    args = [
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
        f"hydra.run.dir={out}",
    ]
    proc = run_script("train.py", args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 2
    assert math.isfinite(summary["first_step_loss"]) and math.isfinite(summary["last_step_loss"])
    assert "train/loss_rl" in summary["metrics"] and "train/clip_frac" in summary["metrics"]
    ckpt = out / "checkpoints" / "last.ckpt"
    if strategy == "fsdp":
        assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2  # sharded over the 2 ranks
    else:
        assert ckpt.is_file()
