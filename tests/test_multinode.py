"""Launches from outside Lightning, on CPU with gloo: torchrun (one node with two processes, and two
"nodes" of one process each on 127.0.0.1), srun (scripts/slurm/train.sbatch through a stand-in srun),
and a local submitit sweep. Each run's final weights are compared bitwise with Lightning's own
two-process launch of the same job: the same world, the same shards, the same reductions."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, TWO_PROCESS_JOB, assert_bitwise_equal, crash_at, load_weights, run_script

JOB = [*TWO_PROCESS_JOB, "export=false"]
CRASH = crash_at(2)
ENV = {"PYTHONWARNINGS": "ignore", "QUARTET_ROOT": str(ROOT), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables (pytest may itself run under one)."""
    launch = (
        "RANK",
        "LOCAL_RANK",
        "NODE_RANK",
        "GROUP_RANK",
        "WORLD_SIZE",
        "TORCHELASTIC_RUN_ID",
        "MASTER_PORT",
    )
    env = {k: v for k, v in os.environ.items() if k not in launch and not k.startswith("SLURM_")}
    return {**env, **ENV, **extra}


def _torchrun(args: list[str], node_rank: int | None, port: int, log: Path) -> subprocess.Popen:
    """``torchrun`` with 2 processes on one node, or (``node_rank`` given) one of 2 nodes of 1 process;
    its output goes to ``log`` (a file: two launches that wait on each other must not block on a pipe)."""
    layout = ["--nproc_per_node=2"]
    if node_rank is not None:
        layout = ["--nnodes=2", f"--node_rank={node_rank}", "--nproc_per_node=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *layout, "--master_addr=127.0.0.1"]
    cmd += [f"--master_port={port}", str(ROOT / "train.py"), *args]
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=_clean_env(), stdout=out, stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    return proc.wait(timeout=600), log.read_text()


def _two_nodes(args: list[str], logs: Path) -> list[tuple[int, str]]:
    """Two torchrun commands, node ranks 0 and 1, as two machines would run them."""
    port = _free_port()
    args = [*args, "trainer.num_nodes=2", "trainer.devices=1"]
    launched = [(_torchrun(args, r, port, logs / f"node{r}.log"), logs / f"node{r}.log") for r in (0, 1)]
    return [_wait(proc, log) for proc, log in launched]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _check_one_writer(run: Path) -> None:
    """Rank 0 alone wrote the shared files; rank 1 logged beside them; the lock is gone."""
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    assert (run / "debug.log").is_file() and (run / "debug.rank1.log").is_file()
    assert not (run / ".lock").exists()
    assert not list(run.glob("checkpoints/*-v1.ckpt")), "two ranks saved checkpoints"


@pytest.fixture(scope="module")
def lightning_launch(tmp_path_factory) -> Path:
    """The reference: Lightning starts the two processes itself (trainer=ddp, devices=2)."""
    run = tmp_path_factory.mktemp("lightning") / "run"
    result = run_script("train.py", ["trainer=ddp", "trainer.devices=2", *JOB, f"hydra.run.dir={run}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert _summary(run)["launch"]["cluster_environment"] == "LightningEnvironment"
    return run


@pytest.mark.slow
def test_torchrun_one_node_two_processes_equals_lightning_launch(tmp_path, lightning_launch):
    run = tmp_path / "run"
    log = tmp_path / "torchrun.log"
    proc = _torchrun(
        ["trainer=ddp", "trainer.devices=2", *JOB, f"hydra.run.dir={run}"], None, _free_port(), log
    )
    rc, out = _wait(proc, log)
    assert rc == 0, out[-3000:]
    s = _summary(run)
    assert s["launch"] == {
        "launcher": "torchrun",
        "cluster_environment": "TorchElasticEnvironment",
        "world_size": 2,
        "num_nodes": 1,
    }
    assert s["global_step"] == 4 and s["status"] == "finished"
    _check_one_writer(run)
    assert_bitwise_equal(
        load_weights(run / "checkpoints" / "last.ckpt"),
        load_weights(lightning_launch / "checkpoints" / "last.ckpt"),
    )


@pytest.mark.slow
def test_torchrun_two_nodes_crash_then_resume_equals_lightning_launch(tmp_path, lightning_launch):
    run = tmp_path / "run"
    args = ["trainer=ddp", *JOB, f"hydra.run.dir={run}"]
    crashed = _two_nodes([*args, *CRASH], tmp_path)
    for (
        rc,
        out,
    ) in crashed:  # both "nodes" stop at step 2; node 1 ran: it did not refuse rank 0's locked folder
        assert rc != 0 and "simulated crash at step 2" in out, out[-3000:]
    assert (run / "checkpoints" / "step000002.ckpt").is_file()
    resumed = _two_nodes([*args, "ckpt_path=last", "+callbacks.crash.step=100"], tmp_path)
    for rc, out in resumed:
        assert rc == 0, out[-3000:]
    s = _summary(run)
    assert s["launch"]["num_nodes"] == 2 and s["launch"]["world_size"] == 2
    assert s["global_step"] == 4 and s["steps_this_run"] == 2 and s["resumed_from"].endswith("last.ckpt")
    assert_bitwise_equal(
        load_weights(run / "checkpoints" / "last.ckpt"),
        load_weights(lightning_launch / "checkpoints" / "last.ckpt"),
    )


@pytest.mark.slow
def test_sbatch_script_through_srun_equals_lightning_launch(tmp_path, lightning_launch):
    """scripts/slurm/train.sbatch as sbatch would run it on 2 nodes x 1 task, with a stand-in srun that
    starts the tasks here with srun's variables; Lightning picks its SLURMEnvironment."""
    run = tmp_path / "run"
    env = _clean_env(
        PATH=f"{ROOT / 'tests' / 'fake_slurm'}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_ID="31337",
        SLURM_JOB_NAME="quartet-test",
        SLURM_NNODES="2",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_NODELIST="127.0.0.1",
        SLURM_SUBMIT_DIR=str(ROOT),
        MASTER_PORT=str(_free_port()),
        PYTHON=sys.executable,
        RUN_DIR=str(run),
    )
    script = ROOT / "scripts" / "slurm" / "train.sbatch"
    result = subprocess.run(
        ["bash", str(script), *JOB], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "job 31337 on 2 node(s) x 1 task(s)" in result.stdout
    s = _summary(run)
    assert s["launch"] == {
        "launcher": "slurm",
        "cluster_environment": "SLURMEnvironment",
        "world_size": 2,
        "num_nodes": 2,
    }
    _check_one_writer(run)
    assert_bitwise_equal(
        load_weights(run / "checkpoints" / "last.ckpt"),
        load_weights(lightning_launch / "checkpoints" / "last.ckpt"),
    )


@pytest.mark.slow
def test_submitit_local_sweep_runs_two_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", "trainer.max_steps=2,3", f"hydra.sweep.dir={sweep}"]
    result = run_script("train.py", [*args, *[a for a in JOB if not a.startswith("trainer.max_steps")]])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in result.stdout + result.stderr
    for job, steps in ((0, 2), (1, 3)):
        s = _summary(sweep / str(job))
        assert s["global_step"] == steps and s["status"] == "finished"
        assert f"trainer.max_steps={steps}" in (sweep / str(job) / ".hydra" / "overrides.yaml").read_text()
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # both ran as submitit jobs


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
def test_a_submitit_sweep_job_saves_and_requeues_before_its_time_limit_like_a_single_job(tmp_path):
    """A ``-m hydra/launcher=slurm`` job runs inside submitit's job process (``submitit.core._submit``,
    here through the stand-in srun), which installs its own handler on its signal (SIGUSR2, the one its
    ``--signal=USR2@120`` makes SLURM send) before Lightning's, which listened on SIGUSR1: the job ended
    without a checkpoint. Now Lightning's requeue handler gets the signal: it saves ``hpc_ckpt_1.ckpt``
    and calls ``scontrol requeue <job id>``; SLURM's SIGTERM ends the job (exit 143, interrupted). The
    requeued job reruns the same command with the same job id in the same folder, where Lightning
    resumes from the HPC checkpoint as for an sbatch job (not rerun here: one more process start)."""
    import signal
    import time

    import submitit

    from tests.hardening_helpers import run_train_script

    folder, run, mark, requeues = (
        tmp_path / "submitit",
        tmp_path / "run",
        tmp_path / "started",
        tmp_path / "requeues",
    )
    folder.mkdir()
    steps = 12
    job = [a for a in JOB if not a.startswith("trainer.max_steps=")]
    args = [*job, f"trainer.max_steps={steps}", "trainer.max_epochs=100", f"hydra.run.dir={run}"]
    args += ["+callbacks.mark._target_=tests.hardening_helpers.TouchAtStep", "+callbacks.mark.step=2"]
    args += [f"+callbacks.mark.path={mark}", "+callbacks.mark.sleep=0.3"]
    submitit.helpers.DelayedSubmission(run_train_script, args).dump(folder / "4242_submitted.pkl")
    env = _clean_env(
        PATH=f"{ROOT / 'tests' / 'fake_slurm'}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(ROOT),
        SUBMITIT_EXECUTOR="slurm",
        SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="quartet-sweep",
        SLURM_NNODES="1",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_NODELIST="127.0.0.1",
        FAKE_SCONTROL_LOG=str(requeues),
    )
    cmd = ["bash", str(ROOT / "tests" / "fake_slurm" / "srun"), sys.executable, "-m", "submitit.core._submit"]
    log = tmp_path / "job.log"
    with log.open("w") as out:
        srun = subprocess.Popen([*cmd, str(folder)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not mark.exists():
        assert srun.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    (task,) = _children(srun.pid)
    os.kill(task, signal.SIGUSR2)  # SLURM's warning before the time limit (submitit: --signal=USR2@120)
    while not requeues.exists():
        assert srun.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.kill(task, signal.SIGTERM)  # what `scontrol requeue` does to the running job
    assert srun.wait(timeout=300) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    assert requeues.read_text() == "requeue 4242\n"
    saved = torch.load(run / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert 2 <= saved < steps and _summary(run)["status"] == "interrupted"
