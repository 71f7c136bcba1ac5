"""StopSignals: one record of the stop signals (SIGTERM, SIGUSR1, SIGINT) for every phase of a run.

Lightning installs its own signal handlers at the start of each ``fit``/``validate``/``test``/
``predict`` and puts the previous ones back at its end, so a signal that lands between two phases (the
``hf_model/`` export runs after fit's teardown) or in a phase that Quartet did not watch (the
validation after fit) used to kill the process silently or end it with exit status 0. A run installs
one ``StopSignals`` for its whole duration (``installed()``); the callbacks re-install it over
Lightning's handlers at the start of each phase (``callbacks.preemption``) and ask it at every batch
whether to stop, and the code between phases asks it too (``check``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequested(Exception):
    """Raised by the handler itself while ``StopSignals.raising()`` is active (work that can be dropped
    at once, such as an export written to a temporary folder)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Records the first stop signal of ``signums``; a second Ctrl+C stops at once."""

    def __init__(self, signums: Iterable[int] = STOP_SIGNALS):
        self.signums = tuple(signums)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._raise = False

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            log.warning("received %s: stopping at the next safe point", signal.Signals(signum).name)
            if signum == signal.SIGINT:  # a second Ctrl+C stops at once
                signal.signal(signal.SIGINT, signal.default_int_handler)
        if self._raise:
            self._raise = False  # raise once: the cleanup that follows must not be cut short again
            raise StopRequested(signum)

    def take(self, signums: Iterable[int] | None = None) -> None:
        """(Re-)install the handler for ``signums`` (default: all of ``self.signums``; main thread only:
        Python's rule). Replaced handlers are remembered the first time, for ``restore``."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signums if signums is None else signums:
            current = signal.getsignal(signum)
            if current == self.handle:
                continue
            if signum == signal.SIGINT and self.received == signal.SIGINT:
                continue  # the second Ctrl+C must stay fatal
            self._previous.setdefault(signum, current)
            signal.signal(signum, self.handle)

    def adopt(self, signum: int) -> None:
        """Add ``signum`` to the recorded signals from now on (installed at the next ``take``); the
        handler it has now is the one ``restore`` puts back."""
        if signum not in self.signums:
            self.signums = (*self.signums, signum)
        if threading.current_thread() is threading.main_thread():
            self._previous.setdefault(signum, signal.getsignal(signum))

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        self.take()
        try:
            yield self
        finally:
            self.restore()

    @contextmanager
    def raising(self) -> Iterator[None]:
        """Within the block a stop signal raises ``StopRequested`` at once (also one already received)."""
        if self.received is not None:
            raise StopRequested(self.received)
        self.take()
        self._raise = True
        try:
            yield
        finally:
            self._raise = False
