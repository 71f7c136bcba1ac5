"""A lock file that keeps two live runs out of one run folder.

``<run>/.lock`` holds the owner's pid, host and SLURM job id. A second run that finds a live owner
refuses with one ``error:`` line; a lock whose owner is gone (same host, dead pid; or the same SLURM
job, requeued) is stale and taken over with a warning. ``kill -9`` leaves the file behind, which is
why staleness is checked instead of trusting the file's mere existence.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from utils.errors import QuartetError

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: half-written by an owner killed while creating it
    return owner if isinstance(owner, dict) else {}


def _is_stale(owner: dict[str, Any], lock_path: Path) -> bool:
    """True when the owner can't be running any more."""
    if not owner:  # unreadable: stale unless just being written
        try:
            return time.time() - lock_path.stat().st_mtime > 10
        except FileNotFoundError:
            return True
    me = _owner()
    if owner.get("slurm_job_id") and owner.get("slurm_job_id") == me["slurm_job_id"]:
        return True  # the same SLURM job, requeued: its earlier incarnation is gone
    if owner.get("host") != me["host"]:
        return False  # can't see another machine's processes
    pid = owner.get("pid")
    return not isinstance(pid, int) or pid == me["pid"] or not _pid_alive(pid)


class RunFolderLock:
    """Context manager: hold ``<folder>/.lock`` for the duration of a run (``enabled=False`` on
    non-zero ranks, which run inside the rank-0 owner's job)."""

    def __init__(self, folder: str | Path, enabled: bool = True):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.enabled = enabled
        self.held = False

    def acquire(self) -> None:
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_owner(self.path)
                if owner is None:
                    continue  # released meanwhile: try again
                if not _is_stale(owner, self.path):
                    raise QuartetError(
                        f"run folder {self.folder} is in use by a live run (pid {owner.get('pid')} on "
                        f"{owner.get('host')}, since {owner.get('since')}); wait for it to end or use a new "
                        f"folder (hydra.run.dir=...); if that run is dead, delete {self.path}"
                    ) from None
                log.warning(
                    "taking over the stale lock %s (pid %s on %s is gone)",
                    self.path,
                    owner.get("pid"),
                    owner.get("host"),
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(_owner(), f)
            self.held = True
            return
        raise QuartetError(f"could not take the lock {self.path}: another run keeps taking it")

    def release(self) -> None:
        if self.held:
            owner = _read_owner(self.path)
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
