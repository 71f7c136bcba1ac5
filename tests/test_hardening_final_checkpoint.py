"""Issue 11 §1.3: a run that stops at max_steps mid-epoch keeps its final state in last.ckpt, a
finished run can be extended with a larger max_steps, and a resume never duplicates CSV rows."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.helpers import FAST, assert_bitwise_equal, compose_cfg, load_weights
from train import train

# A constant LR makes "15 steps, then 10 more" the same computation as "25 steps".
ARGS = [
    "callbacks=minimal",
    "logger=csv",
    "data.batch_size=4",
    "trainer.limit_val_batches=0",
    "trainer.log_every_n_steps=1",
    "callbacks.model_checkpoint.every_n_train_steps=10",
    "module.scheduler.schedule=constant",
    "module.scheduler.warmup_ratio=0",
    *FAST,
]


def csv_steps(run_dir) -> list[int]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def ckpt_step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def test_max_steps_mid_epoch_saves_final_state_and_extending_trains_more(tmp_path):
    run = tmp_path / "run"
    train(compose_cfg([*ARGS, "trainer.max_steps=15"], run))
    assert ckpt_step(run / "checkpoints" / "last.ckpt") == 15  # before: 10, the last periodic step
    first = json.loads((run / "summary.json").read_text())
    assert first["global_step"] == 15 and first["metrics"]["train/loss"] > 0

    train(compose_cfg([*ARGS, "trainer.max_steps=25", "ckpt_path=last"], run))
    assert ckpt_step(run / "checkpoints" / "last.ckpt") == 25
    extended = json.loads((run / "summary.json").read_text())
    assert extended["global_step"] == 25 and extended["metrics"]["train/loss"] > 0
    assert extended["steps_recorded"] == 25  # the loss curve continues across the resume
    assert extended["steps_this_run"] == 10
    assert extended["first_step_loss"] == first["first_step_loss"]
    assert csv_steps(run) == list(range(25))  # every step once

    straight = tmp_path / "straight"
    train(compose_cfg([*ARGS, "trainer.max_steps=25"], straight))
    assert_bitwise_equal(
        load_weights(run / "checkpoints" / "last.ckpt"), load_weights(straight / "checkpoints" / "last.ckpt")
    )


def test_resume_after_crash_does_not_duplicate_csv_rows(tmp_path):
    crash = ["+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=13"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(compose_cfg([*ARGS, "trainer.max_steps=20", *crash], tmp_path))
    assert ckpt_step(tmp_path / "checkpoints" / "last.ckpt") == 10
    assert csv_steps(tmp_path) == list(range(13))  # steps 10-12 are redone after the resume
    train(compose_cfg([*ARGS, "trainer.max_steps=20", "ckpt_path=last"], tmp_path))
    assert csv_steps(tmp_path) == list(range(20))


def test_resuming_a_finished_run_without_new_steps_keeps_its_summary_metrics(tmp_path):
    train(compose_cfg([*ARGS, "trainer.max_steps=5"], tmp_path))
    before = json.loads((tmp_path / "summary.json").read_text())
    last_bytes = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    train(compose_cfg([*ARGS, "trainer.max_steps=5", "ckpt_path=last"], tmp_path))
    after = json.loads((tmp_path / "summary.json").read_text())
    assert after["metrics"] == before["metrics"] and after["global_step"] == 5
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == last_bytes
