"""Issue 11 §1.2: SIGTERM, SIGUSR1 and SIGINT save last.ckpt at the current step, write summary.json
with "interrupted": true, exit 128+signal, and a resume continues bitwise exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import FAST, ROOT

STEPS = 30
ARGS = [
    "callbacks=minimal",
    "logger=csv",
    "data.batch_size=4",
    f"trainer.max_steps={STEPS}",
    "trainer.limit_val_batches=0",
    "callbacks.model_checkpoint.every_n_train_steps=50",  # no periodic checkpoint before the signal
    *FAST,
]


def start_and_signal(run_dir, signum: int) -> subprocess.CompletedProcess:
    """Start train.py, wait until step 3 is done, send ``signum``, wait for the exit."""
    mark = run_dir.parent / f"{run_dir.name}.started"
    args = [
        *ARGS,
        "+callbacks.mark._target_=tests.hardening_helpers.TouchAtStep",
        "+callbacks.mark.step=3",
        f"+callbacks.mark.path={mark}",
        "+callbacks.mark.sleep=0.2",  # keep the run from finishing before the signal lands
        f"hydra.run.dir={run_dir}",
    ]
    # One thread, like the in-process runs (conftest): float sums then match bitwise.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "QUARTET_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not mark.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "training never started"
        time.sleep(0.1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# SIGTERM then resume_dir, bitwise, for every module: tests/test_reliability_kill.py.


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGUSR1, 138), (signal.SIGINT, 130)])
def test_sigusr1_and_sigint_save_and_exit_nonzero(tmp_path, signum, code):
    run_dir = tmp_path / "run"
    done = start_and_signal(run_dir, signum)
    assert done.returncode == code, done.stderr[-3000:]
    assert f"interrupted by {signal.Signals(signum).name}" in done.stderr
    assert "Traceback" not in done.stderr
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and 3 <= ckpt["global_step"] == summary["global_step"] < STEPS


def test_under_slurm_auto_requeue_lightning_keeps_sigterm_and_sigusr1(monkeypatch):
    from types import SimpleNamespace

    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    from callbacks.preemption import GracefulInterrupt

    def trainer_with(env):
        return SimpleNamespace(_accelerator_connector=SimpleNamespace(cluster_environment=env))

    handler = GracefulInterrupt("run")
    assert handler._signals(trainer_with(SLURMEnvironment(auto_requeue=True))) == [signal.SIGINT]
    everything = [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]
    assert handler._signals(trainer_with(SLURMEnvironment(auto_requeue=False))) == everything
    assert handler._signals(trainer_with(LightningEnvironment())) == everything


def test_a_requeued_slurm_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    from utils.run_lock import RunFolderLock

    owner = {"pid": 1, "host": "node-a", "slurm_job_id": "4242", "since": "earlier"}
    (tmp_path / ".lock").write_text(json.dumps(owner))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # the same job, restarted on another node
    with RunFolderLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
