"""Two-process DDP and FSDP2 runs, started as subprocesses of train.py (strategies relaunch sys.argv,
so they must never run inside the pytest process): they train, crash, and resume."""

from __future__ import annotations

import json

import pytest

from tests.fsdp_helpers import (
    assert_consolidated_equals_export,
    assert_same_export,
    summary,
    train_then_resume_from_copy,
)
from tests.helpers import TWO_PROCESS_JOB, crash_at, run_script

COMMON = TWO_PROCESS_JOB
CRASH = crash_at(2)


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_ddp_two_processes_train_and_resume(tmp_path):
    run = tmp_path / "ddp"
    first = run_script("train.py", ["trainer=ddp", *COMMON, *CRASH, f"hydra.run.dir={run}"])
    assert first.returncode != 0 and "simulated crash" in first.stderr
    assert (run / "checkpoints" / "step000002.ckpt").is_file()
    resumed = run_script(
        "train.py",
        ["trainer=ddp", *COMMON, "ckpt_path=last", f"hydra.run.dir={run}", "+callbacks.crash.step=100"],
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    s = _summary(run)
    assert s["global_step"] == 4 and s["resumed_from"].endswith("last.ckpt")
    assert s["steps_this_run"] == 2  # steps 3 and 4 ran after the resume
    assert s["steps_recorded"] == 4  # the loss curve continues across the resume


@pytest.mark.slow
def test_fsdp_two_processes_resume_from_sharded_checkpoint_exactly_and_consolidate(tmp_path):
    # num_workers > 0 as well: the sampler state must survive worker processes under sharding.
    args = ["trainer=fsdp", *COMMON, "export=true", "data.num_workers=1"]
    full, resumed = train_then_resume_from_copy(tmp_path, args, step=2)
    assert summary(resumed)["resumed_from"].endswith("step000002.ckpt")
    assert_same_export(full / "hf_model", resumed / "hf_model")
    assert_consolidated_equals_export(full)
