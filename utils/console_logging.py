"""What an entry point prints on screen: each log message once, and no advertisement.

Lightning's own loggers print on their own: ``import lightning`` gives the ``lightning`` logger a stderr
handler (``INFO: <message>``) and leaves it propagating to the root logger, where Hydra's console and file
handlers print the same record again; ``lightning.pytorch``/``lightning.fabric``, when imported before
Hydra set up logging, get a handler of their own and stop propagating (so the run's log file misses them).
Once Hydra's handlers are on the root logger, :func:`one_line_per_message` removes those handlers and lets
every Lightning record go through Hydra's: one line on screen, in Hydra's format, and one in the log file.
It also drops Lightning's advertisement for its cloud logger (the "Tip: ... litlogger" line of every run)
and two deprecation warnings that dependencies raise inside their own code on every run (nothing a user
can act on).
"""

from __future__ import annotations

import logging
import warnings

#: The loggers whose ``__init__`` adds a console handler of their own (Lightning 2.x and its old names).
LIGHTNING_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
)
#: Where Lightning's ``rank_zero_info`` messages (the cloud-logger tip among them) are logged.
RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)

#: Regexes of warnings raised inside dependencies on every run: torchdata's StatefulDataLoader calls
#: ``torch.set_vital``, Lightning's ``_pytree`` checks ``isinstance(treespec, LeafSpec)``.
DEPENDENCY_WARNINGS = (r"'set_vital' is deprecated", r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class DropCloudLoggerTip(logging.Filter):
    """Drops the record that advertises Lightning's cloud logger (``litlogger``); passes every other."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Tip:" in message and "litlogger" in message)


def one_line_per_message() -> None:
    """Route Lightning's log records through the root logger's handlers only (when it has any: under
    ``@hydra.main`` it has Hydra's); filter out the cloud-logger tip and ``DEPENDENCY_WARNINGS``."""
    import lightning  # noqa: F401 - its import adds the handlers this function removes

    if logging.getLogger().handlers:
        for name in LIGHTNING_LOGGERS:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:  # Lightning's own; not a file or capture handler
                    logger.removeHandler(handler)
            logger.propagate = True
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropCloudLoggerTip) for f in logger.filters):
            logger.addFilter(DropCloudLoggerTip())
    for message in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
