"""What every Hydra entry point does around its pure function: resume_dir, errors, the metric."""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from utils.console_logging import one_line_per_message
from utils.deprecated_names import apply_to_argv
from utils.errors import QuartetError, as_write_error
from utils.launch_env import is_rank_zero
from utils.run_folder import folder_closing_line, load_resume_config

log = logging.getLogger("quartet")


_TASK_STARTED = False
_ERROR_REPORTED = False
CONFIG_HINT = (
    "hint: `{command} --help` lists the config groups and their options; "
    "use +key=value to add a key the config does not have, and check the spelling of group and key names."
)


def run_cli(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; when Hydra rejects the command line (unknown group, option or
    key), add a hint after Hydra's own message."""
    global _TASK_STARTED, _ERROR_REPORTED
    _TASK_STARTED = _ERROR_REPORTED = False
    apply_to_argv()
    try:
        main()
    except SystemExit as e:
        if e.code not in (0, None) and not _TASK_STARTED and not _ERROR_REPORTED:
            print(CONFIG_HINT.format(command=_command(sys.argv[0])), file=sys.stderr)
        if isinstance(e.code, int) and e.code > 128:  # stopped by a signal: everything is saved by now
            # The interpreter's last garbage collection over a run's millions of objects took ~7 s
            # (tiny model, 600 conversations), eating into a scheduler's grace period before SIGKILL.
            # Freezing them skips that pass; files and loggers were closed already (atexit runs first).
            gc.freeze()
        raise


def _command(argv0: str) -> str:
    """How the user started us: ``python train.py`` or a console script (``quartet-train``)."""
    return f"python {argv0}" if argv0.endswith(".py") else Path(argv0).name


def _check_shared_run_dir(cfg: DictConfig) -> None:
    """torchrun/srun ranks must agree on the run folder (``utils.launch_env.check_shared_run_dir``)."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from utils.launch_env import check_shared_run_dir

    if not HydraConfig.initialized():  # called in-process without @hydra.main (tests, notebooks)
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.RUN:  # a multirun's sweep folder is resolved once, by the launcher
        return
    raw = OmegaConf.to_container(hydra_cfg.run, resolve=False).get("dir")
    check_shared_run_dir(str(raw) if raw is not None else None, cfg.get("resume_dir"))


def exit_with_error(message: str, exit_code: int = 2) -> NoReturn:
    """Print ``error: <message>`` as the one line on stderr and exit with ``exit_code``."""
    global _ERROR_REPORTED
    _ERROR_REPORTED = True
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(exit_code)


def run_main(
    cfg: DictConfig, fn: Callable[[DictConfig], dict[str, Any]], closing_line: bool = False
) -> float | None:
    """Run ``fn(cfg)``; turn user errors into one ``error:`` line and their exit status (2 for bad
    input, 1 for a non-finite loss or a full disk, 128+signal for an interrupt); return the optimized
    metric. ``closing_line``: end with one line naming the time, the metric and the run folder
    (eval.py and generate.py; train.py writes its own from ``summary.json``)."""
    global _TASK_STARTED
    _TASK_STARTED = True
    one_line_per_message()  # Hydra's logging is set up by now
    started = time.perf_counter()
    try:
        _check_shared_run_dir(cfg)
        if cfg.get("resume_dir"):
            cfg = load_resume_config(cfg, list(HydraConfig.get().overrides.task))
        metrics = fn(cfg)
    except QuartetError as e:
        exit_with_error(str(e), e.exit_code)
    except InstantiationException as e:  # a QuartetError raised by a config's _target_ (e.g. ConfigError)
        if not isinstance(e.__cause__, QuartetError):
            raise
        exit_with_error(str(e.__cause__), e.__cause__.exit_code)
    except OSError as e:  # a full disk or a read-only file system, whatever was being written
        error = as_write_error(e)
        if error is None:
            raise
        exit_with_error(str(error), error.exit_code)
    name = cfg.get("optimized_metric")
    value = metrics.get(name) if name else None
    if name and value is None:
        log.warning("optimized_metric %r was not logged; available: %s", name, sorted(metrics))
    if closing_line and is_rank_zero():
        metric = (name, float(value)) if isinstance(value, (int, float)) else None
        output_dir = HydraConfig.get().runtime.output_dir
        log.info(folder_closing_line(output_dir, time.perf_counter() - started, metric))
    return value
