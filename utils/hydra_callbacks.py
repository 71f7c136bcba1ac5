"""Hydra callbacks of the Quartet entry points (registered in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def blocking_file(folder: str | Path) -> Path | None:
    """The existing file (not a folder) on the way to ``folder``, which would make creating it fail."""
    p = Path(folder).expanduser().absolute()
    for candidate in (p, *p.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def _check(config: DictConfig, key: str) -> None:
    from utils.entrypoint import exit_with_error

    try:
        folder = OmegaConf.select(config, key, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - an unresolvable folder is left to Hydra's own message
        return
    if not folder:
        return
    blocker = blocking_file(folder)
    if blocker is not None:
        exit_with_error(f"{key}={folder}: can't create the run folder: {blocker} is a file, not a folder")
    problem = not_writable(folder)
    if problem is not None:
        exit_with_error(f"{key}={folder}: can't write the run folder ({problem}); choose a writable folder")


def not_writable(folder: str | Path) -> str | None:
    """Why files can't be created in ``folder`` (made if missing, as Hydra would next), or ``None``.

    Tried for real (an unnamed temporary file, ``O_TMPFILE`` where the system has it), so a read-only
    mount, missing permissions and a full disk all show, for root too; without this check Hydra's log
    handler fails first with a traceback."""
    import tempfile

    p = Path(folder).expanduser().absolute()
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        return f"{e.strerror or type(e).__name__}: {e.filename or p}"
    return None


def _check_run_name(config: DictConfig) -> None:
    """``run_name`` names a folder (``outputs/<run_name>/``) and the log file ``<run_name>.log`` in
    the run folder: it must be one safe path component (``utils.safe_names``)."""
    from utils.entrypoint import exit_with_error
    from utils.errors import ConfigError
    from utils.safe_names import file_name_part

    try:
        name = OmegaConf.select(config, "run_name", throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001 - an unresolvable name is left to Hydra's own message
        return
    if name is None:
        return
    key = (
        "stage.name"
        if OmegaConf.select(config, "stage.name", default=None) and "stage" in config
        else "run_name"
    )
    try:
        file_name_part(name, "run_name", fix=f"set {key} to a plain name (it names the run's folder and log)")
    except ConfigError as e:
        exit_with_error(str(e))


class RunDirCheck(Callback):
    """Before Hydra creates the run folder (and fails with a traceback): a run or sweep folder under a
    path that is a file, or a ``run_name`` that is not one plain name, is one ``error:`` line, exit
    status 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_run_name(config)
        _check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_run_name(config)
        _check(config, "hydra.sweep.dir")
