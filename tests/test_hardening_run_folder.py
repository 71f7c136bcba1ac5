"""Issue 11 §1.4 and §1.8: a run folder is locked while a run lives in it, a folder that holds a run is
never silently reused, and temporary files live beside their target and are cleaned up."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from checkpoints.io_plugin import BesideTargetCheckpointIO
from tests.helpers import FAST, compose_cfg
from train import train
from utils.errors import QuartetError
from utils.run_lock import RunFolderLock

ARGS = ["debug=default", "logger=csv", *FAST]


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_lock(folder, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "slurm_job_id": None, "since": "earlier"}
    (folder / ".lock").write_text(json.dumps(owner))


def test_a_second_live_run_in_the_folder_refuses(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_lock(tmp_path, live.pid)
        with pytest.raises(
            QuartetError, match=rf"run folder {tmp_path} is in use by a live run \(pid {live.pid} "
        ):
            train(compose_cfg(ARGS, tmp_path))
    finally:
        live.kill()
        live.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing written
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == live.pid  # not ours to remove


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path, dead.pid)
    with caplog.at_level(logging.WARNING):
        train(compose_cfg(ARGS, tmp_path))
    assert any("taking over the stale lock" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "summary.json").read_text())["global_step"] == 2
    assert not (tmp_path / ".lock").exists()  # released at the end


def test_lock_is_held_during_the_run_and_refuses_a_second_holder(tmp_path):
    with RunFolderLock(tmp_path) as lock:
        owner = json.loads(lock.path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        # a process that can't be ours: another host's owner is never assumed dead
        other = RunFolderLock(tmp_path / "other")
        write_lock(other.folder, 1, host="some-other-host")
        with pytest.raises(QuartetError, match="in use by a live run .* on some-other-host"):
            other.acquire()
    assert not (tmp_path / ".lock").exists()


def test_a_finished_folder_is_not_silently_reused(tmp_path):
    train(compose_cfg(ARGS, tmp_path))
    before = digest(tmp_path)
    with pytest.raises(
        QuartetError, match=r"already holds a finished run \(summary.json\); pass ckpt_path=last"
    ) as e:
        train(compose_cfg(ARGS, tmp_path))
    assert f"resume_dir={tmp_path}" in str(e.value) and "hydra.run.dir=" in str(e.value)
    assert digest(tmp_path) == before  # summary, CSV and checkpoints byte-identical
    train(compose_cfg([*ARGS, "ckpt_path=last"], tmp_path))  # continuing it is fine


def test_an_unfinished_folder_needs_ckpt_path_too(tmp_path):
    crash = ["+callbacks.crash._target_=tests.helpers.CrashAtStep", "+callbacks.crash.step=1"]
    cfg = compose_cfg([*ARGS, "callbacks.model_checkpoint.every_n_train_steps=1", *crash], tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    with pytest.raises(QuartetError, match=r"already holds an unfinished run \(checkpoints/last.ckpt\)"):
        train(compose_cfg(ARGS, tmp_path))


def test_checkpoint_temp_file_is_written_beside_the_target(tmp_path, monkeypatch):
    seen = []
    real_save = torch.save

    def spy(obj, f, *a, **k):
        seen.append(os.path.abspath(f.name))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", spy)
    target = tmp_path / "checkpoints" / "last.ckpt"
    BesideTargetCheckpointIO().save_checkpoint({"x": torch.ones(2)}, target)
    assert seen == [str(tmp_path / "checkpoints" / f".last.ckpt.tmp-{os.getpid()}")]
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.ones(2))


def test_a_save_killed_midway_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = BesideTargetCheckpointIO()
    io.save_checkpoint({"step": 1}, target)

    def dies(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_stale_temp_files_are_removed_at_the_next_start(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    old = time.time() - 3600
    stale_cache = cache / "tmpab12cd"  # a kill during tokenisation (datasets' map writer)
    stale_cache.write_bytes(b"x" * 100)
    os.utime(stale_cache, (old, old))
    live_cache = cache / "tmpliveone"  # another run's writer holds it open: kept
    live_cache.write_bytes(b"y")
    os.utime(live_cache, (old, old))
    fresh_cache = cache / "tmpfresh"  # just written: kept (may belong to a starting run)
    fresh_cache.write_bytes(b"z")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    stale_ckpt = run / "checkpoints" / ".last.ckpt.tmp-12345"  # a kill during a checkpoint save
    stale_ckpt.write_bytes(b"partial")
    stale_summary = run / ".summary.json.tmp-12345"
    stale_summary.write_text("{")
    with open(live_cache, "rb"):
        train(compose_cfg([*ARGS, f"data.cache_dir={cache}"], run))
    assert not stale_cache.exists() and not stale_ckpt.exists() and not stale_summary.exists()
    assert live_cache.exists() and fresh_cache.exists()
    assert not list(run.rglob("*.tmp-*"))


def test_reuse_check_names_the_state_and_lets_a_slurm_requeue_resume(tmp_path, monkeypatch):
    from utils.run_folder import check_folder_reuse

    (tmp_path / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(QuartetError, match=r"already holds an interrupted run \(summary.json\)"):
        check_folder_reuse(tmp_path, None, None)
    check_folder_reuse(tmp_path, "last", None)  # continuing is fine
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"")  # Lightning resumes a requeued job from it
    check_folder_reuse(tmp_path, None, None)
