"""User-facing errors: one clear line that names what is wrong, where, and the fix."""

from __future__ import annotations


class QuartetError(Exception):
    """Base class for errors caused by the user's input (config, data, paths).

    ``train.py``/``eval.py``/``generate.py`` print these as a single ``error: ...`` line and exit
    with status 2, instead of a traceback.
    """


class ConfigError(QuartetError):
    """The composed config is invalid. Holds every problem found, so all are reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid config: " + "; ".join(self.problems))


class DataError(QuartetError):
    """A data file or record is invalid. The message names the file, the line and the field."""


def where(path: str | None, line: int | None = None) -> str:
    """Format a location like ``data.jsonl:12`` (or ``record 12`` when there is no file)."""
    if path is None:
        return f"record {line}" if line is not None else "input"
    return f"{path}:{line}" if line is not None else str(path)
