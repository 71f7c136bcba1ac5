"""Temporary files live beside their target (same folder, so the final rename is atomic and a kill
leaves nothing in the system temp folder), and stale ones are removed at the next start."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from utils.data_paths import path_exists

log = logging.getLogger(__name__)
TEMP_MARK = ".tmp-"


def temp_path_beside(target: str | Path) -> Path:
    """``<dir>/.<name>.tmp-<pid>``: a hidden temporary name in the target's own folder."""
    target = Path(target)
    return target.with_name(f".{target.name}{TEMP_MARK}{os.getpid()}")


def files_open_on_this_host() -> set[str]:
    """Real paths of the files any process here holds open (from ``/proc/*/fd``; empty elsewhere)."""
    out: set[str] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    for fd_dir in proc.glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                out.add(os.readlink(fd))
            except OSError:
                continue
    return out


def remove_stale_temp_files(
    folder: str | Path | None, patterns: Iterable[str], min_age_s: float = 0.0
) -> list[Path]:
    """Delete files in ``folder`` matching any glob of ``patterns`` that no process on this host holds
    open and that were last modified at least ``min_age_s`` seconds ago (a live writer keeps its
    file open and fresh); return what was removed. A matching folder (a sharded checkpoint being
    written, ``utils.atomic.replace_folder``) goes as a whole unless a file in it is open."""
    if not folder or not path_exists(folder) or not Path(folder).is_dir():  # a too-long name: no folder
        return []
    candidates = [p for pattern in patterns for p in Path(folder).glob(pattern) if p.is_file() or p.is_dir()]
    if not candidates:
        return []
    in_use = files_open_on_this_host()
    now = time.time()
    removed = []
    for path in candidates:
        real = str(path.resolve())
        if real in in_use or (path.is_dir() and any(f.startswith(real + os.sep) for f in in_use)):
            continue
        try:
            if now - path.stat().st_mtime >= min_age_s:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another process removed or renamed it meanwhile
            continue
    if removed:
        log.warning("removed %d stale temporary file(s) in %s (left by a killed run)", len(removed), folder)
    return removed
