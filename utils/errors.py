"""User-facing errors: one clear line that names what is wrong, where, and the fix."""

from __future__ import annotations


class QuartetError(Exception):
    """Base class for errors caused by the user's input (config, data, paths).

    ``train.py``/``eval.py``/``generate.py`` print these as a single ``error: ...`` line and exit
    with status ``exit_code`` (2: bad input), instead of a traceback.
    """

    exit_code: int = 2


class ConfigError(QuartetError):
    """The composed config is invalid. Holds every problem found, so all are reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid config: " + "; ".join(self.problems))


class DataError(QuartetError):
    """A data file or record is invalid. The message names the file, the line and the field."""


def first_line(e: BaseException) -> str:
    """``<ExceptionType>: <first line of its message>``: a library's error cut to fit one ``error:`` line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def where(path: str | None, line: int | None = None) -> str:
    """Format a location like ``data.jsonl:12`` (or ``record 12`` when there is no file)."""
    if path is None:
        return f"record {line}" if line is not None else "input"
    return f"{path}:{line}" if line is not None else str(path)


class NonFiniteLossError(QuartetError):
    """Training produced a non-finite loss or gradient and the policy is ``nonfinite=stop``.

    Not a bad-input error, so the exit status is 1 (``error:`` line, no traceback)."""

    exit_code = 1


class TrainingInterrupted(QuartetError):
    """A SIGTERM/SIGUSR1/SIGINT stopped training after saving ``last.ckpt``.

    The exit status is ``128 + signal number`` (143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1),
    as a shell reports a process killed by that signal, so schedulers never record success."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class WriteError(QuartetError):
    """A file could not be written: the disk is full, the quota is spent, or the file system is
    read-only. Not bad input, so the exit status is 1 (``error:`` line, no traceback); files written
    before are intact (every writer writes a temporary file and renames it)."""

    exit_code = 1


#: errno values that mean "this folder can't take more data", whatever was being written.
WRITE_ERRNOS = {28: "no space left on device", 122: "disk quota exceeded", 30: "read-only file system"}
#: How torch's zip writer (``torch.save``) reports a failed write: a RuntimeError, no errno.
ZIP_WRITER_MARKS = ("PytorchStreamWriter failed", "file write failed")


def as_write_error(e: BaseException, path: object | None = None) -> WriteError | None:
    """A ``WriteError`` naming ``path`` (else the file the OS error names) and its folder when ``e`` is
    a full disk, spent quota or read-only file system (``OSError``), or a failed write of torch's zip
    writer (``RuntimeError``); ``None`` for anything else."""
    import os

    if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
        why = WRITE_ERRNOS[e.errno]
    elif isinstance(e, RuntimeError) and any(m in str(e) for m in ZIP_WRITER_MARKS):
        why = f"the write failed, most likely a full disk ({first_line(e)})"
    else:
        return None
    target = path if path is not None else getattr(e, "filename", None)
    if target is None:
        return WriteError(f"can't write: {why}")
    folder = os.path.dirname(os.path.abspath(os.fspath(target)))
    return WriteError(
        f"can't write {target}: {why}; free space in {folder} (files written before are intact)"
    )
